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
    Scratch, eventually, free_port, http_get, metrics_addr, reflex_bin, require_root, run_to_end,
    start_agent_with, webhook_receiver,
};

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
    let socket_path = scratch.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
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
    let socket_path = scratch.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
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
