//! Who did it: a process in a cgroup named like a systemd unit, or like
//! the ones Docker and containerd make, carries that unit or container on
//! its events, its first included; policies select by unit, container,
//! ancestry and command line.
use std::{
    collections::HashSet,
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use reflex::{
    events::{Body, Kind, Record},
    identity::Runtime,
    sensor::{Sensor, SensorOptions},
    telemetry::Metrics,
};
use reflex_tests::{
    ChildGuard, Scratch, cgroups::CgroupTree, reflex_bin, require_root, start_agent_with,
    wait_for_record,
};

const WAIT: Duration = Duration::from_secs(10);

/// A container id unique to this run (64 hex digits).
fn container_id(salt: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos();
    format!("{:032x}{:024x}{:08x}", nanos, std::process::id(), salt)
}

/// Runs `command` in the cgroup at `path` to its end; returns its pid.
fn run_in(tree: &CgroupTree, path: &str, command: &mut Command) -> u32 {
    tree.place(command, path);
    let mut child = ChildGuard::spawn(command.stdout(Stdio::null()).stderr(Stdio::null()));
    let pid = child.pid();
    let status = child.wait_for(WAIT).expect("the command finishes");
    assert!(status.success(), "{command:?} in {path}: {status:?}");
    pid
}

async fn record_of(
    records: &mut reflex::lanes::LaneReceiver<Record>,
    kind: Kind,
    pid: u32,
) -> Record {
    wait_for_record(records, WAIT, |r| r.kind == kind && r.process.pid == pid)
        .await
        .unwrap_or_else(|| panic!("no {kind:?} event of {pid}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_unit_and_the_container_from_the_first_on() {
    require_root();
    let metrics = Metrics::new();
    let options = SensorOptions {
        kinds: Some(HashSet::from([Kind::Exec, Kind::Exit, Kind::Connect])),
        exclude_self: false,
        ..SensorOptions::default()
    };
    let (_sensor, mut records) = Sensor::start(options, metrics.clone()).expect("sensor");
    let me = std::process::id();
    let slice = format!("reflex-test-{me}.slice");
    let tree = CgroupTree::new(&slice);
    let unit = format!("reflex-test-{me}.service");
    let docker = container_id(1);
    let containerd = container_id(2);
    let cgroupfs = container_id(3);
    let cases = [
        (tree.make(&unit), Some(unit.clone()), None),
        (
            tree.make(&format!("docker-{docker}.scope")),
            Some(format!("docker-{docker}.scope")),
            Some((docker.as_str(), Runtime::Docker)),
        ),
        (
            tree.make(&format!(
                "kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{containerd}.scope"
            )),
            Some(format!("cri-containerd-{containerd}.scope")),
            Some((containerd.as_str(), Runtime::Containerd)),
        ),
        // The cgroupfs layouts (`/docker/ID`, `/kubepods/...`) count only
        // at the top of the hierarchy, outside the test's slice: the
        // parser's unit tests cover them; inside the slice such a path is
        // what a delegated user could forge, and no container.
        (tree.make(&format!("docker/{cgroupfs}")), None, None),
    ];
    let listener = TcpListener::bind("127.0.0.1:0").expect("loopback listener");
    let port = listener.local_addr().expect("address").port();
    for (path, unit, container) in &cases {
        // bash connects to the listener through /dev/tcp: exec, connect, exit.
        let pid = run_in(
            &tree,
            path,
            Command::new("/bin/bash").args([
                "-c",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-"),
            ]),
        );
        for kind in [Kind::Exec, Kind::Connect, Kind::Exit] {
            let record = record_of(&mut records, kind, pid).await;
            if kind == Kind::Connect {
                assert!(matches!(record.body, Body::Connect(_)));
            }
            let identity = record
                .process
                .identity
                .as_deref()
                .unwrap_or_else(|| panic!("{kind:?} of {pid} in {path} has no identity"));
            assert_eq!(&identity.cgroup, path, "{kind:?}");
            assert_eq!(&identity.unit, unit, "{kind:?} in {path}");
            let found = identity
                .container
                .as_ref()
                .map(|c| (c.id.as_str(), c.runtime));
            assert_eq!(found, *container, "{kind:?} in {path}");
        }
    }
    // Each new cgroup was resolved when its first event came, and only then.
    let resolved = metrics
        .identity
        .resolves
        .with_label_values(&["resolved"])
        .get();
    assert!(resolved >= cases.len() as u64, "{resolved} resolved");
    drop(listener);
}

/// The last alert before `sentinel`'s, every alert of `policy` the agent
/// printed: exec events are judged in order, so once the sentinel's alert
/// is out, every earlier exec's is.
fn alerts_until(agent: &reflex_tests::Agent, sentinel: &str) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    agent
        .stdout_line(WAIT, |line| {
            let Ok(alert) = serde_json::from_str::<serde_json::Value>(line) else {
                return false;
            };
            let done = alert["policy"] == sentinel;
            seen.push(alert);
            done
        })
        .expect("the sentinel's alert");
    seen
}

#[test]
fn policies_select_by_unit_container_ancestry_argv_and_login() {
    require_root();
    let scratch = Scratch::new();
    let me = std::process::id();
    let tool = scratch.tool("marked", "/bin/true");
    let wrapper = scratch.script("wrapper", &format!("exec {} \"$@\"", tool.display()));
    let sentinel = scratch.tool("sentinel", "/bin/true");
    let watched = scratch.path("watched.conf");
    std::fs::write(&watched, "a\n").expect("watched file");
    let tool_s = tool.display().to_string();
    scratch.policy(
        "identity.yaml",
        &format!(
            r#"name: by-unit
on: {{ exec: {{ paths: ["{tool_s}"] }} }}
when: {{ process: {{ unit: ["reflex-test-{me}-*.service"] }} }}
do: [alert]
---
name: by-container
on: {{ exec: {{ paths: ["{tool_s}"] }} }}
when: {{ process: {{ container: true }} }}
do: [alert]
---
name: by-ancestor
on: {{ exec: {{ paths: ["{tool_s}"] }} }}
when: {{ process: {{ ancestor_exe: ["{wrapper}"] }} }}
do: [alert]
---
name: by-argv
on: {{ exec: {{ paths: ["{tool_s}"] }} }}
when: {{ process: {{ argv: ["*--reflex-mark*"] }} }}
do: [alert]
---
name: by-login
on: {{ exec: {{ paths: ["{tool_s}"] }} }}
when: {{ process: {{ login_uid: [4242] }} }}
do: [alert]
---
name: file-by-unit
on: {{ file: {{ paths: ["{watched}"] }} }}
when: {{ process: {{ unit: ["reflex-test-{me}-*.service"] }} }}
do: [alert]
---
name: sentinel
on: {{ exec: {{ paths: ["{sentinel}"] }} }}
do: [alert]
"#,
            wrapper = wrapper.display(),
            sentinel = sentinel.display(),
            watched = watched.display(),
        ),
    );
    let tree = CgroupTree::new(&format!("reflex-test-{me}-p.slice"));
    let agent = start_agent_with(&mut scratch.run_command(&reflex_bin()), "reflex running");
    let unit = tree.make(&format!("reflex-test-{me}-a.service"));
    let container = tree.make(&format!("docker-{}.scope", container_id(9)));
    let plain = tree.make(&format!("reflex-test-{me}-plain.scope"));
    // A file event of a process in the unit carries it.
    let writer = run_in(
        &tree,
        &unit,
        Command::new("/bin/sh").args(["-c", &format!("echo b >> {}", watched.display())]),
    );
    let file = reflex_tests::policy_alert(&agent, WAIT, "file-by-unit", |_| true);
    assert_eq!(file["event"]["process"]["pid"], writer);
    assert_eq!(file["event"]["process"]["cgroup"], unit.as_str());
    let in_unit = run_in(&tree, &unit, &mut Command::new(&tool));
    let in_container = run_in(&tree, &container, &mut Command::new(&tool));
    let wrapped = run_in(&tree, &plain, &mut Command::new(&wrapper));
    let marked = run_in(&tree, &plain, Command::new(&tool).arg("--reflex-mark"));
    let unmarked = run_in(&tree, &plain, Command::new(&tool).arg("--other"));
    // Root may set its login uid once; the shell's exec of the tool keeps it.
    let logged_in = run_in(
        &tree,
        &plain,
        Command::new("/bin/sh").args([
            "-c",
            &format!("echo 4242 > /proc/self/loginuid && exec {tool_s}"),
        ]),
    );
    run_in(&tree, &plain, &mut Command::new(&sentinel));

    let alerts = alerts_until(&agent, "sentinel");
    let fired: HashSet<(String, u64)> = alerts
        .iter()
        // The exec policies; the file lane is not ordered with them.
        .filter(|a| a["policy"].as_str().is_some_and(|p| p.starts_with("by-")))
        .map(|a| {
            (
                a["policy"].as_str().unwrap_or("?").to_string(),
                a["event"]["process"]["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let want: HashSet<(String, u64)> = [
        ("by-unit", in_unit),
        ("by-container", in_container),
        ("by-ancestor", wrapped),
        ("by-argv", marked),
        ("by-login", logged_in),
    ]
    .into_iter()
    .map(|(p, pid)| (p.to_string(), u64::from(pid)))
    .collect();
    assert_eq!(fired, want, "unmarked pid {unmarked} fires nothing");
    // The alert shows where the process ran.
    let by_unit = alerts
        .iter()
        .find(|a| a["policy"] == "by-unit")
        .expect("by-unit alert");
    assert_eq!(
        by_unit["event"]["process"]["unit"],
        format!("reflex-test-{me}-a.service")
    );
    assert_eq!(by_unit["event"]["process"]["cgroup"], unit.as_str());
}
