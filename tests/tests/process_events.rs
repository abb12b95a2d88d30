//! The spine end to end: real probes, real processes, real events.
use std::{
    collections::HashSet,
    process::{Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;
use reflex::{
    events::{Body, Kind},
    sensor::{Sensor, SensorOptions},
    telemetry::Metrics,
};
use reflex_tests::{require_root, start_reflex, wait_for_record};

const WAIT: Duration = Duration::from_secs(5);

/// The sensor runs inside the test process, whose children are what the
/// tests look at, so it must not exclude itself.
fn in_process(kinds: Option<HashSet<Kind>>) -> SensorOptions {
    SensorOptions {
        kinds,
        exclude_self: false,
        ..SensorOptions::default()
    }
}

fn exec_exit_only() -> SensorOptions {
    in_process(Some(HashSet::from([Kind::Exec, Kind::Exit])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_exit_of_a_child_are_reported_with_context() {
    require_root();
    let (_sensor, mut records) = Sensor::start(exec_exit_only(), Metrics::new()).expect("sensor");

    let status = Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .spawn()
        .expect("spawn sh");
    let pid = status.id();
    let exit_status = status.wait_with_output().expect("wait sh").status;
    assert_eq!(exit_status.code(), Some(3));

    let exec = wait_for_record(&mut records, WAIT, |r| {
        r.kind == Kind::Exec && r.process.pid == pid
    })
    .await
    .expect("an exec event for the child");
    assert_eq!(
        exec.process.ppid,
        std::process::id(),
        "ppid is the test process"
    );
    // The executable the kernel loaded, with every symlink (`/bin`, `sh`)
    // resolved; the name as spelled stays in `filename`.
    let loaded = std::fs::canonicalize("/bin/sh").expect("/bin/sh resolves");
    assert_eq!(exec.process.exe.as_deref(), loaded.to_str());
    assert_eq!(exec.process.argv, ["/bin/sh", "-c", "exit 3"]);
    let Body::Exec(body) = &exec.body else {
        panic!("exec record without exec body: {exec:?}")
    };
    assert_eq!(body.filename, "/bin/sh");
    let meta = std::fs::metadata(&loaded).expect("stat the loaded file");
    assert_eq!(
        body.ino,
        std::os::unix::fs::MetadataExt::ino(&meta),
        "the identity of the loaded file"
    );
    assert!(!body.killed);
    assert_eq!(
        exec.process.parent.as_ref().map(|p| p.pid),
        Some(std::process::id())
    );

    let exit = wait_for_record(&mut records, WAIT, |r| {
        r.kind == Kind::Exit && r.process.pid == pid
    })
    .await
    .expect("an exit event for the child");
    let Body::Exit(body) = &exit.body else {
        panic!("exit record without exit body: {exit:?}")
    };
    assert_eq!(body.code, Some(3));
    assert_eq!(body.signal, None);
    assert_eq!(
        exit.process.exe.as_deref(),
        loaded.to_str(),
        "context from the table"
    );
    assert!(exit.ktime_ns >= exec.ktime_ns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signalled_child_reports_its_signal() {
    require_root();
    let (_sensor, mut records) = Sensor::start(exec_exit_only(), Metrics::new()).expect("sensor");
    let child = Command::new("/bin/sh")
        .args(["-c", "kill -TERM $$"])
        .spawn()
        .expect("spawn sh");
    let pid = child.id();
    child.wait_with_output().expect("wait sh");
    let exit = wait_for_record(&mut records, WAIT, |r| {
        r.kind == Kind::Exit && r.process.pid == pid
    })
    .await
    .expect("an exit event");
    let Body::Exit(body) = &exit.body else {
        panic!("not an exit: {exit:?}")
    };
    assert_eq!((body.code, body.signal), (None, Some(15)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_counters_are_readable_and_zero_in_a_quiet_run() {
    require_root();
    let metrics = Metrics::new();
    let (sensor, mut records) = Sensor::start(in_process(None), metrics.clone()).expect("sensor");
    for _ in 0..20 {
        Command::new("/bin/true").status().expect("run true");
    }
    let last = Command::new("/bin/true").spawn().expect("spawn true");
    let pid = last.id();
    last.wait_with_output().expect("wait true");
    wait_for_record(&mut records, WAIT, |r| {
        r.kind == Kind::Exit && r.process.pid == pid
    })
    .await
    .expect("the last exit arrives");

    let losses = sensor.kernel_losses().expect("LOST map readable");
    assert!(!losses.is_empty());
    for (reason, family, count) in losses {
        assert_eq!(
            count,
            0,
            "kernel lost {} events: {}",
            family.label(),
            reason.label()
        );
    }
    for reason in ["truncated", "unknown_kind", "size_mismatch"] {
        assert_eq!(metrics.lost_count("decode", reason, "unknown"), 0);
    }
    assert!(metrics.events.with_label_values(&["exec", "exec"]).get() >= 21);
}

#[test]
fn reflex_events_streams_json_lines_and_stops_on_sigterm() {
    require_root();
    let (mut agent, lines) = start_reflex(&["events", "--kind", "exec,exit"], "streaming events");

    let child = Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let pid = child.id();
    child.wait_with_output().expect("wait sh");

    let deadline = std::time::Instant::now() + WAIT;
    let mut kinds = Vec::new();
    while kinds.len() < 2 && std::time::Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(&line).expect("each line is JSON");
        if value["process"]["pid"] == pid {
            kinds.push(value["kind"].as_str().unwrap_or_default().to_string());
            if value["kind"] == "exit" {
                assert_eq!(value["exit"]["code"], 3);
            }
        } else {
            assert!(
                value["kind"] == "exec" || value["kind"] == "exit",
                "--kind filters: {line}"
            );
        }
    }
    assert_eq!(kinds, ["exec", "exit"]);

    agent.signal(Signal::SIGTERM);
    let status = agent
        .wait_for(Duration::from_secs(1))
        .expect("reflex events exits within a second of SIGTERM");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn reflex_run_detaches_and_exits_zero_on_sigint() {
    require_root();
    let dir = std::env::temp_dir().join(format!("reflex-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("policy dir");
    let (mut agent, _lines) = start_reflex(
        &[
            "run",
            "--policies",
            dir.to_str().expect("utf-8 path"),
            "--state-dir",
            dir.join("state").to_str().expect("utf-8 path"),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        "reflex running",
    );
    agent.signal(Signal::SIGINT);
    let status = agent
        .wait_for(Duration::from_secs(1))
        .expect("reflex run exits within a second of SIGINT");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_closed_stderr_does_not_take_the_agent_down() {
    use std::io::{BufRead as _, BufReader};
    require_root();
    let dir = tempfile::tempdir().expect("policy dir");
    let mut child = Command::new(reflex_tests::reflex_bin())
        .args(["run", "--policies"])
        .arg(dir.path())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start reflex");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut guard = reflex_tests::ChildGuard::adopt(child);
    let ready = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("reflex running"));
    assert!(ready, "reflex run did not start");
    // The reader is gone now: every later log line hits a closed pipe.
    std::thread::sleep(Duration::from_millis(200));
    guard.signal(Signal::SIGINT);
    let status = guard
        .wait_for(Duration::from_secs(2))
        .expect("reflex exits after SIGINT");
    assert!(status.success(), "exit status {status}");
}
