//! The policy engine end to end: `reflex run` with real policies answers
//! real processes. Every process, file and directory here is the test's own.
use std::{
    fs,
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use reflex_tests::{Agent, ChildGuard, Scratch, require_root, start_agent};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

fn kill_policy(name: &str, mode: &str, tool: &Path) -> String {
    format!(
        "name: {name}\nmode: {mode}\non:\n  exec: {{ paths: [\"{}\"] }}\ndo:\n  - kill\n  - alert: {{ severity: critical, summary: \"{{process.exe}} killed\" }}\n",
        tool.display()
    )
}

fn spawn(tool: &Path, args: &[&str]) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(tool)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// The alert line on the agent's stdout about process `pid`.
fn alert_for(agent: &Agent, pid: u32) -> Value {
    let line = agent
        .stdout_line(WAIT, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"]["process"]["pid"] == pid)
        })
        .unwrap_or_else(|| panic!("no alert for pid {pid} within {WAIT:?}"));
    serde_json::from_str(&line).expect("alert is JSON")
}

#[test]
fn an_enforced_exec_policy_kills_the_tool_and_names_it() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("forbidden-tool", "/bin/sleep");
    scratch.policy(
        "kill.yaml",
        &kill_policy("no-forbidden-tool", "enforce", &tool),
    );
    let agent = scratch.start();

    let mut child = spawn(&tool, &["30"]);
    let pid = child.pid();
    let status = child
        .wait_for(WAIT)
        .expect("the forbidden tool is killed within seconds");
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");

    let alert = alert_for(&agent, pid);
    assert_eq!(alert["policy"], "no-forbidden-tool");
    assert_eq!(alert["mode"], "enforce");
    assert_eq!(alert["actions"], serde_json::json!(["kill", "alert"]));
    assert_eq!(alert["event"]["process"]["exe"], tool.to_str().unwrap());
    assert_eq!(alert["summary"], format!("{} killed", tool.display()));
    assert_eq!(alert["results"][0]["action"], "kill");
    assert_eq!(alert["results"][0]["ok"], true);

    let log = fs::read_to_string(scratch.path("state/alerts.jsonl")).expect("alert log");
    assert!(
        log.lines()
            .any(|l| l.contains("\"policy\":\"no-forbidden-tool\"")),
        "the alert is also in STATE/alerts.jsonl"
    );
}

#[test]
fn monitor_mode_lets_the_tool_live_and_says_what_it_would_do() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("forbidden-tool", "/bin/sleep");
    scratch.policy(
        "watch.yaml",
        &kill_policy("watch-forbidden-tool", "monitor", &tool),
    );
    let agent = scratch.start();

    let mut child = spawn(&tool, &["30"]);
    let pid = child.pid();
    let alert = alert_for(&agent, pid);
    assert_eq!(alert["mode"], "monitor");
    assert_eq!(alert["would"], serde_json::json!(["kill"]));
    assert_eq!(alert["actions"], serde_json::json!([]));
    assert!(
        child.wait_for(Duration::from_millis(500)).is_none(),
        "monitor mode killed nothing"
    );
}

#[test]
fn a_run_hook_gets_the_event_as_json_and_its_children_are_ignored() {
    require_root();
    let scratch = Scratch::new();
    let trigger = scratch.tool("upload-done", "/bin/true");
    let forbidden = scratch.tool("forbidden-tool", "/bin/sleep");
    let out = scratch.path("hook-out");
    fs::create_dir(&out).expect("hook output dir");
    // The hook saves its stdin, then runs the forbidden tool itself: the
    // agent must not react to what its own hooks start.
    let hook = scratch.script(
        "hook",
        &format!(
            "cat > {out}/event-$1.json && {forbidden} 0.2 && touch {out}/done-$1",
            out = out.display(),
            forbidden = forbidden.display()
        ),
    );
    scratch.policy(
        "hook.yaml",
        &format!(
            "name: upload-hook\nmode: enforce\non:\n  exec: {{ paths: [\"{}\"] }}\ndo:\n  - run: {{ command: [\"{}\", \"{{process.pid}}\"], timeout: 10s }}\n",
            trigger.display(),
            hook.display()
        ),
    );
    scratch.policy(
        "kill.yaml",
        &kill_policy("no-forbidden-tool", "enforce", &forbidden),
    );
    let agent = scratch.start();

    let mut child = spawn(&trigger, &[]);
    let pid = child.pid();
    child.wait_for(WAIT).expect("upload-done exits");

    let done = out.join(format!("done-{pid}"));
    let deadline = std::time::Instant::now() + WAIT;
    while !done.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        done.exists(),
        "the hook ran to the end: its forbidden child was not killed"
    );
    let event: Value = serde_json::from_str(
        &fs::read_to_string(out.join(format!("event-{pid}.json"))).expect("hook stdin saved"),
    )
    .expect("the hook's stdin is the event as JSON");
    assert_eq!(event["kind"], "exec");
    assert_eq!(event["process"]["pid"], pid);
    assert_eq!(event["process"]["exe"], trigger.to_str().unwrap());
    assert!(
        agent
            .stdout_line(Duration::from_millis(300), |l| l
                .contains("no-forbidden-tool"))
            .is_none(),
        "no kill alert for the hook's own child"
    );
}

#[test]
fn a_broken_policy_is_rejected_while_the_running_set_still_kills() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("forbidden-tool", "/bin/sleep");
    scratch.policy(
        "kill.yaml",
        &kill_policy("no-forbidden-tool", "enforce", &tool),
    );
    let agent = scratch.start();

    scratch.policy(
        "broken.yaml",
        "name: broken\non: { exec: { paths: [relative] } }\ndo: [alert]\n",
    );
    let error = agent
        .log_line(WAIT, "broken.yaml:2:")
        .expect("the broken file is reported with its line");
    assert!(error.contains("not absolute"), "{error}");
    agent
        .log_line(WAIT, "reload rejected")
        .expect("the reload is rejected");

    let mut child = spawn(&tool, &["30"]);
    let status = child
        .wait_for(WAIT)
        .expect("still killed after the failed reload");
    assert_eq!(status.signal(), Some(9));
}

#[test]
fn a_valid_new_policy_takes_effect_without_a_restart() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("late-tool", "/bin/sleep");
    let other = scratch.tool("other-tool", "/bin/true");
    scratch.policy("other.yaml", &kill_policy("other", "monitor", &other));
    let agent = scratch.start();

    scratch.policy("late.yaml", &kill_policy("late", "enforce", &tool));
    agent
        .log_line(WAIT, "policies reloaded")
        .expect("the directory change is picked up");
    let mut child = spawn(&tool, &["30"]);
    let status = child.wait_for(WAIT).expect("the new policy kills");
    assert_eq!(status.signal(), Some(9));
}

#[test]
fn replaying_a_recorded_stream_gives_the_live_decisions() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("forbidden-tool", "/bin/sleep");
    let watched = scratch.tool("watched-tool", "/bin/true");
    scratch.policy(
        "kill.yaml",
        &kill_policy("no-forbidden-tool", "enforce", &tool),
    );
    scratch.policy(
        "watch.yaml",
        &kill_policy("watch-tool", "monitor", &watched),
    );
    let recorder = start_agent(&["events", "--kind", "exec"], "streaming events");
    let agent = scratch.start();

    let mut pids = Vec::new();
    for (path, args) in [
        (&tool, &["30"][..]),
        (&watched, &[][..]),
        (&tool, &["30"][..]),
    ] {
        let mut child = spawn(path, args);
        pids.push(child.pid());
        child.wait_for(WAIT).expect("exits or is killed");
    }
    let live: Vec<Value> = pids.iter().map(|&pid| alert_for(&agent, pid)).collect();

    let recorded: Vec<String> = pids
        .iter()
        .map(|&pid| {
            recorder
                .stdout_line(WAIT, |l| {
                    serde_json::from_str::<Value>(l).is_ok_and(|v| v["process"]["pid"] == pid)
                })
                .expect("the exec was recorded")
        })
        .collect();
    let events = scratch.path("recorded.jsonl");
    fs::write(&events, recorded.join("\n") + "\n").expect("write recording");

    let output = Command::new(reflex_tests::reflex_bin())
        .args(["replay", "--events"])
        .arg(&events)
        .arg("--policies")
        .arg(scratch.path("policies"))
        .output()
        .expect("run replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("decision is JSON"))
        .collect();

    let key = |v: &Value, pid: &Value| {
        (
            pid.clone(),
            v["policy"].clone(),
            v["mode"].clone(),
            v["actions"].clone(),
            v["would"].clone(),
        )
    };
    let live_keys: Vec<_> = live
        .iter()
        .map(|a| key(a, &a["event"]["process"]["pid"]))
        .collect();
    let replay_keys: Vec<_> = replayed.iter().map(|d| key(d, &d["pid"])).collect();
    assert_eq!(replay_keys, live_keys);
}
