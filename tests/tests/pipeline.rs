//! The one-way pipeline seen from outside: `reflex events` prints the
//! finished events of every family that `reflex run` judges, and `reflex
//! replay` of a live run's events reaches the live run's decisions.
use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reflex_tests::{ChildGuard, Scratch, reflex_bin, require_root, start_agent};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Policies with one of each family: a watched file, outbound connects to
/// `blocked_port` on 127.0.0.2, a busy process named `pipeline-spin`.
fn policies(scratch: &Scratch, mode: &str, blocked_port: u16) {
    let managed = scratch.path("managed");
    fs::create_dir_all(&managed).unwrap();
    fs::write(managed.join("app.conf"), "good\n").unwrap();
    scratch.policy(
        "all.yaml",
        &format!(
            r#"name: managed
mode: {mode}
on: {{ file: {{ paths: ["{dir}/app.conf"] }} }}
do: [revert, alert]
---
name: no-port
mode: {mode}
on: {{ connect: {{ direction: [outbound], remote: [127.0.0.2/32], ports: [{blocked_port}] }} }}
do: [block, alert]
---
name: spin
mode: monitor
on: {{ cpu: {{ scope: process, above: 30%, for: 1s }} }}
when: {{ process: {{ comm: ["pipeline-spin"] }} }}
do: [kill, alert]
---
name: true-runs
mode: monitor
on: {{ exec: {{ paths: ["/usr/bin/true"] }} }}
do: [alert]
"#,
            dir = managed.display()
        ),
    );
}

/// A busy loop whose command name is `pipeline-spin`, ended on drop.
fn spin(scratch: &Scratch) -> ChildGuard {
    let tool = scratch.tool("pipeline-spin", "/bin/sh");
    ChildGuard::spawn(
        Command::new(tool)
            .args(["-c", "while :; do :; done"])
            .stdout(Stdio::null()),
    )
}

/// Changes the watched file, connects to the blocked address and an open
/// one, runs `/usr/bin/true`: one event of each family but cpu.
fn act(scratch: &Scratch, blocked_port: u16) {
    let path = scratch.path("managed/app.conf");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all(b"tampered\n").unwrap();
    drop(file);
    let _ = TcpStream::connect_timeout(
        &format!("127.0.0.2:{blocked_port}").parse().unwrap(),
        Duration::from_secs(1),
    );
    Command::new("/usr/bin/true").status().unwrap();
}

#[test]
fn events_prints_every_family_the_policies_make_visible() {
    require_root();
    let scratch = Scratch::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    policies(&scratch, "monitor", port);
    let policies = scratch.path("policies");
    let agent = start_agent(
        &[
            "events",
            "--kind",
            "file,connect,cpu_high,exec",
            "--policies",
            policies.to_str().unwrap(),
            "--cpu-interval",
            "250ms",
        ],
        "streaming events",
    );
    let spinner = spin(&scratch);
    act(&scratch, port);
    let _ = TcpStream::connect(listener.local_addr().unwrap()).unwrap();

    let want: BTreeSet<&str> = ["file", "connect", "cpu_high", "exec"].into();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < want.len() && Instant::now() < deadline {
        let Some(line) = agent.stdout_line(Duration::from_millis(500), |_| true) else {
            continue;
        };
        let event: Value = serde_json::from_str(&line).expect("one JSON object per line");
        let kind = event["kind"].as_str().unwrap().to_string();
        assert!(
            want.contains(kind.as_str()),
            "--kind lets only the kinds asked for through: {line}"
        );
        match kind.as_str() {
            "file" => {
                assert_eq!(
                    event["file"]["path"],
                    scratch.path("managed/app.conf").to_str().unwrap(),
                    "a settled file event names its path"
                );
                assert!(event["file"]["after"]["size"].is_u64(), "{line}");
            }
            "cpu_high" => assert_eq!(event["cpu"]["policy"], "spin"),
            _ => {}
        }
        seen.insert(kind);
    }
    drop(spinner);
    assert_eq!(
        seen,
        want.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        "every family printed"
    );
    assert_eq!(
        fs::read_to_string(scratch.path("managed/app.conf")).unwrap(),
        "tampered\n",
        "reflex events enforces nothing"
    );
}

/// The decision fields an alert and a replayed decision share.
fn decision(value: &Value) -> Value {
    serde_json::json!({
        "policy": value["policy"],
        "mode": value["mode"],
        "actions": value["actions"],
        "would": value["would"],
        "suppressed": value["suppressed"],
        "note": value["note"],
    })
}

#[test]
fn replaying_a_live_run_reaches_the_same_decisions_for_every_family() {
    require_root();
    let scratch = Scratch::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    policies(&scratch, "enforce", port);
    let agent = scratch.start();
    let spinner = spin(&scratch);
    act(&scratch, port);
    let alerts_path = scratch.path("state/alerts.jsonl");
    let families = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|a| a["event"]["kind"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let want: BTreeSet<String> = ["file", "connect", "cpu_high", "exec"]
        .map(String::from)
        .into();
    let deadline = Instant::now() + WAIT;
    while !families(&fs::read_to_string(&alerts_path).unwrap_or_default()).is_superset(&want)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(spinner);
    drop(agent);
    let alerts: Vec<Value> = fs::read_to_string(&alerts_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        families(&fs::read_to_string(&alerts_path).unwrap()).is_superset(&want),
        "the live run decided on every family: {alerts:#?}"
    );
    let reverted = alerts
        .iter()
        .find(|a| a["policy"] == "managed")
        .expect("a file decision");
    assert_eq!(reverted["actions"], serde_json::json!(["revert", "alert"]));
    assert_eq!(reverted["results"][0]["ok"], true, "{reverted}");

    // The events the live run judged, in order, as `reflex replay` reads them.
    let mut recorded = String::new();
    let mut last = Value::Null;
    for alert in &alerts {
        if alert["event"] != last {
            last = alert["event"].clone();
            recorded.push_str(&serde_json::to_string(&last).unwrap());
            recorded.push('\n');
        }
    }
    let events = scratch.path("recorded.jsonl");
    fs::write(&events, recorded).unwrap();
    let output = Command::new(reflex_bin())
        .args(["replay", "--events"])
        .arg(&events)
        .arg("--policies")
        .arg(scratch.path("policies"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let replayed: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| decision(&serde_json::from_str(l).unwrap()))
        .collect();
    let live: Vec<Value> = alerts.iter().map(decision).collect();
    assert_eq!(replayed, live, "replay decides as the live run did");
}
