//! Decisions published on a real NATS JetStream server on loopback: the
//! right subjects, and nothing lost or doubled while the server is away.
use std::{collections::BTreeSet, process::Command, time::Duration};

use reflex_tests::{
    ChildGuard, Scratch, eventually, metric, metrics_addr,
    nats::{NatsServer, stream_messages},
    require_root,
};

const WAIT: Duration = Duration::from_secs(60);

/// A policy alerting on every run of a copy of `/bin/true`; returns it.
fn alerting_tool(scratch: &Scratch) -> std::path::PathBuf {
    let tool = scratch.tool("bus-tool", "/bin/true");
    scratch.policy(
        "bus.yaml",
        &format!(
            "name: bus-exec\nmode: enforce\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [alert]\n",
            tool.display()
        ),
    );
    tool
}

/// Runs `tool` to its end; returns its pid.
fn run(tool: &std::path::Path) -> u32 {
    let mut child = ChildGuard::spawn(&mut Command::new(tool));
    let pid = child.pid();
    child
        .wait_for(Duration::from_secs(30))
        .expect("the tool ends");
    pid
}

fn config(server: &NatsServer) -> String {
    format!(
        "alerts:\n  stdout: false\nbus: {{ url: '{}', host: test-host-1 }}\n",
        server.url()
    )
}

#[test]
fn decisions_arrive_on_the_stream_under_their_subjects() {
    require_root();
    let server = NatsServer::start();
    let scratch = Scratch::new();
    let tool = alerting_tool(&scratch);
    let agent = scratch.start_with_config(&config(&server));
    let addr = metrics_addr(&agent);
    let pid = run(&tool);
    let mut got = Vec::new();
    assert!(
        eventually(WAIT, || {
            got = stream_messages(&server.url(), "REFLEX");
            !got.is_empty()
        }),
        "the decision reaches the stream"
    );
    let stored = &got[0];
    assert_eq!(stored.subject, "reflex.test-host-1.exec.exec");
    assert_eq!(stored.body["policy"], "bus-exec");
    assert_eq!(stored.body["event"]["process"]["pid"], pid);
    assert!(
        stored
            .msg_id
            .as_deref()
            .is_some_and(|id| id.starts_with("test-host-1-")),
        "{stored:?}"
    );
    assert_eq!(
        metric(
            addr,
            "reflex_alert_deliveries_total{result=\"ok\",sink=\"bus\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(addr, "reflex_component_up{component=\"sink/bus\"}"),
        1.0
    );
}

#[test]
fn decisions_made_while_the_server_is_down_arrive_once_each() {
    outage(200, Duration::ZERO);
}

/// The case: the server away for 30 s while 1 000 decisions are
/// made (past the sink's backoff growing to its 30 s ceiling, so the
/// reconnection is the sink's own, not the client's buffer).
#[test]
fn a_thousand_decisions_over_a_thirty_second_outage_arrive_once_each() {
    outage(1000, Duration::from_secs(30));
}

/// Stops the server, makes `n` decisions, keeps it away at least `down`,
/// starts it again: every decision is stored once, in order.
fn outage(n: usize, down: Duration) {
    require_root();
    let mut server = NatsServer::start();
    let scratch = Scratch::new();
    let tool = alerting_tool(&scratch);
    let agent = scratch.start_with_config(&config(&server));
    let addr = metrics_addr(&agent);
    let ok = "reflex_alert_deliveries_total{result=\"ok\",sink=\"bus\"}";
    let spooled = "reflex_alert_spool_entries{sink=\"bus\"}";

    // One delivered first, so the agent holds a connection when the
    // server goes.
    let mut pids = BTreeSet::from([run(&tool)]);
    assert!(
        eventually(WAIT, || metric(addr, ok) == 1.0),
        "first delivery"
    );
    server.stop();
    let stopped = std::time::Instant::now();
    for _ in 0..n {
        pids.insert(run(&tool));
    }
    assert!(
        eventually(WAIT, || metric(addr, spooled) == n as f64),
        "all {n} decisions wait in the spool; {} do",
        metric(addr, spooled)
    );
    assert!(
        eventually(WAIT, || metric(
            addr,
            "reflex_component_up{component=\"sink/bus\"}"
        ) == 0.0),
        "the sink reports the server gone"
    );

    std::thread::sleep(down.saturating_sub(stopped.elapsed()));
    server.resume();
    let back = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(120), || metric(addr, spooled) == 0.0),
        "the spool drains once the server is back"
    );
    // A figure for the report, not a bound: it includes the sink's backoff.
    eprintln!(
        "bus: {n} spooled decisions delivered {:?} after the server came back",
        back.elapsed()
    );
    let got = stream_messages(&server.url(), "REFLEX");
    let ids: BTreeSet<_> = got.iter().filter_map(|m| m.msg_id.clone()).collect();
    let bodies: BTreeSet<_> = got.iter().map(|m| m.body.to_string()).collect();
    let stored_pids: BTreeSet<u32> = got
        .iter()
        .filter_map(|m| m.body["event"]["process"]["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    assert_eq!(got.len(), n + 1, "each decision stored once");
    assert_eq!(ids.len(), n + 1, "one message id each");
    assert_eq!(bodies.len(), n + 1, "distinct content each");
    assert_eq!(stored_pids, pids, "every run's decision, no other");
    assert_eq!(
        metric(
            addr,
            "reflex_alert_deliveries_total{result=\"ok\",sink=\"bus\"}"
        ),
        (n + 1) as f64
    );
    // Acknowledged in spool order: the stream holds them in run order.
    let order: Vec<&str> = got
        .iter()
        .map(|m| m.body["event"]["time"].as_str().unwrap_or(""))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "delivered in order");
}
