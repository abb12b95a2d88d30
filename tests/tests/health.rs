//! `/healthz`, `/readyz` and the service manager's watchdog: ready and
//! pinging while the agent works, not ready while a sink loses alerts, and
//! ready again once it delivers.
use std::{
    net::TcpListener,
    os::unix::net::UnixDatagram,
    process::Command,
    time::{Duration, Instant},
};

use reflex_tests::{
    Scratch, eventually, free_port, http_get, metric, metrics_addr, reflex_bin, require_root,
    run_to_end, start_agent_with, webhook_receiver,
};

/// A service manager's notification socket in `scratch`: its path and
/// the socket, read 200 ms at a time.
fn notify_socket(scratch: &Scratch) -> (std::path::PathBuf, UnixDatagram) {
    let path = scratch.path("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (path, socket)
}

/// What the agent told the service manager on `socket` within `limit`:
/// whether it said READY=1, and how many WATCHDOG=1 pings it sent.
fn notices(socket: &UnixDatagram, limit: Duration, pings_wanted: usize) -> (bool, usize) {
    let (mut ready, mut pings) = (false, 0);
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while (!ready || pings < pings_wanted) && Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            ready |= line == "READY=1";
            pings += usize::from(line == "WATCHDOG=1");
        }
    }
    (ready, pings)
}

#[test]
fn ready_and_pinging_while_it_works_not_ready_while_a_sink_loses_alerts() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("health-tool", "/bin/true");
    scratch.policy(
        "noisy.yaml",
        &format!(
            "name: noisy\nmode: monitor\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [alert]\n",
            tool.display()
        ),
    );
    let port = free_port();
    let config = scratch.config(&format!(
        "alerts:\n  stdout: false\n  spool_max: 2\n  webhooks:\n    - {{ name: late, url: 'http://127.0.0.1:{port}/x' }}\n"
    ));
    let (socket_path, socket) = notify_socket(&scratch);
    let mut command = scratch.run_command(&reflex_bin());
    command
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000");
    let agent = start_agent_with(&mut command, "reflex running");
    let addr = metrics_addr(&agent);

    let (ready, pings) = notices(&socket, Duration::from_secs(60), 3);
    assert!(ready, "READY=1 sent");
    assert!(pings >= 3, "the watchdog is pinged while every stage turns");
    assert_eq!(http_get(addr, "/healthz"), "ok\n");
    let body = http_get(addr, "/readyz");
    assert!(body.starts_with("ready: "), "{body}");

    // Alerts past the dead sink's spool bound: the agent is not ready (it
    // loses alerts), but healthy (nothing to restart).
    for _ in 0..5 {
        run_to_end(&mut Command::new(&tool), Duration::from_secs(10));
    }
    assert!(
        eventually(Duration::from_secs(60), || http_get(addr, "/readyz")
            .starts_with("losing alerts: sink/late (spool full")),
        "not ready while the sink drops alerts: {}",
        http_get(addr, "/readyz")
    );
    assert_eq!(http_get(addr, "/healthz"), "ok\n");
    let (_, pings) = notices(&socket, Duration::from_secs(60), 2);
    assert!(pings >= 2, "a losing sink does not stop the watchdog");

    // The sink comes back and takes what is spooled: ready again.
    let receiver = webhook_receiver(
        TcpListener::bind(("127.0.0.1", port)).expect("the sink's port"),
        10,
    );
    receiver
        .recv_timeout(Duration::from_secs(90))
        .expect("the spooled alerts are delivered");
    assert!(
        eventually(Duration::from_secs(30), || http_get(addr, "/readyz")
            .starts_with("ready: ")),
        "ready once the sink delivers: {}",
        http_get(addr, "/readyz")
    );
}

#[test]
fn no_watchdog_pings_for_another_process() {
    require_root();
    let scratch = Scratch::new();
    let (socket_path, socket) = notify_socket(&scratch);
    let mut command = scratch.run_command(&reflex_bin());
    // WATCHDOG_PID names a process that is not the agent (pid 1).
    command
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("WATCHDOG_PID", "1");
    let agent = start_agent_with(&mut command, "reflex running");
    let (ready, _) = notices(&socket, Duration::from_secs(60), 0);
    assert!(ready, "READY=1 sent");
    // Pings would come every 0.5 s; some time after READY=1 there are none.
    let (_, pings) = notices(&socket, Duration::from_secs(3), 1);
    assert_eq!(pings, 0);
    assert_eq!(http_get(metrics_addr(&agent), "/healthz"), "ok\n");
}

/// An agent whose stdout and stderr nobody reads (a stalled journal) still
/// reverts: alert and log lines past their queues are lost, counted, and
/// the agent stays healthy.
#[test]
fn unread_stdout_and_stderr_do_not_hold_up_a_revert() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("chatty-tool", "/bin/true");
    let watched = scratch.path("watched.conf");
    std::fs::write(&watched, "original\n").unwrap();
    scratch.policy(
        "policies.yaml",
        &format!(
            "name: chatty\nmode: monitor\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [alert]\n---\n\
             name: guard\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [revert, alert]\n",
            tool.display(),
            watched.display()
        ),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = scratch.run_command_on(&reflex_bin(), &addr.to_string());
    let config = scratch.config("alerts: { stdout_queue: 16 }\n");
    command
        .arg("--config")
        .arg(&config)
        .args(["--log-queue", "64"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // The pipes are held open and never read.
    let _agent = reflex_tests::ChildGuard::spawn(&mut command);
    assert!(
        eventually(Duration::from_secs(120), || {
            reflex_harness::http_get(addr, "/readyz").is_ok_and(|b| b.starts_with("ready: "))
        }),
        "the agent starts"
    );
    // Each alert is ~1 KiB on stdout and a log line on stderr: far more
    // than a pipe holds (64 KiB).
    for _ in 0..600 {
        run_to_end(&mut Command::new(&tool), Duration::from_secs(10));
    }
    assert!(
        eventually(Duration::from_secs(60), || {
            metric(
                addr,
                "reflex_alerts_dropped_total{reason=\"full\",sink=\"stdout\"}",
            ) > 0.0
                && metric(addr, "reflex_log_lines_dropped_total") > 0.0
        }),
        "both queues overflowed"
    );
    std::fs::write(&watched, "tampered\n").unwrap();
    assert!(
        reflex_tests::holds(&watched, "original\n", Duration::from_secs(20)),
        "the revert is not held up by unread output"
    );
    assert_eq!(http_get(addr, "/healthz"), "ok\n");
}
