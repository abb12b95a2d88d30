//! Alert delivery to a real Alertmanager and to a webhook, with nothing
//! lost while the receiver is down; every server listens on loopback.
use std::{
    fs,
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use reflex_tests::{ChildGuard, Scratch, free_port, http_get, require_root, webhook_receiver};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn alertmanager(scratch: &Scratch, port: u16) -> ChildGuard {
    let config = scratch.path("alertmanager.yml");
    fs::write(
        &config,
        "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
    )
    .unwrap();
    let guard = ChildGuard::spawn(
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                scratch.path("am-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "alertmanager did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    guard
}

/// Alerts Alertmanager holds for `policy`.
fn alerts_for(port: u16, policy: &str) -> Vec<Value> {
    let body = http_get(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "/api/v2/alerts",
    );
    let all: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
    all.into_iter()
        .filter(|a| a["labels"]["alertname"] == policy)
        .collect()
}

fn fire(tool: &std::path::Path) {
    let mut child = ChildGuard::spawn(Command::new(tool).arg("30"));
    child.wait_for(Duration::from_secs(5)).expect("killed");
}

#[test]
fn alertmanager_gets_every_alert_even_across_its_downtime_and_an_agent_restart() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("forbidden-tool", "/bin/sleep");
    scratch.policy(
        "kill.yaml",
        &format!(
            "name: no-forbidden-tool\nmode: enforce\non:\n  exec: {{ paths: [\"{}\"] }}\ndo:\n  - kill\n  - alert: {{ severity: critical, summary: \"killed {{process.exe}}\" }}\nlabels: {{ team: security }}\n",
            tool.display()
        ),
    );
    let port = free_port();
    let config = format!(
        "alerts:\n  stdout: false\n  alertmanager: {{ url: 'http://127.0.0.1:{port}', resolve_after: 10m }}\n"
    );
    let mut am = alertmanager(&scratch, port);
    let mut agent = scratch.start_with_config(&config);

    fire(&tool);
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        got = alerts_for(port, "no-forbidden-tool");
    }
    let alert = got.first().expect("Alertmanager received the alert");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["team"], "security");
    assert!(
        alert["labels"]["host"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
    assert_eq!(
        alert["annotations"]["summary"],
        format!("killed {}", tool.display())
    );
    assert!(
        alert["endsAt"].as_str().is_some(),
        "endsAt set so it resolves"
    );

    // Alertmanager down; five alerts; the agent restarted; Alertmanager back.
    am.signal(Signal::SIGTERM);
    am.wait_for(Duration::from_secs(10))
        .expect("alertmanager stops");
    fs::remove_dir_all(scratch.path("am-data")).ok();
    for _ in 0..5 {
        fire(&tool);
    }
    std::thread::sleep(Duration::from_millis(500));
    agent.guard.signal(Signal::SIGTERM);
    agent
        .guard
        .wait_for(Duration::from_secs(5))
        .expect("agent stops");
    let _agent = scratch.start_with_config(&config);
    let _am = alertmanager(&scratch, port);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        got = alerts_for(port, "no-forbidden-tool");
        if got.len() >= 5 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut ids: Vec<String> = got
        .iter()
        .map(|a| {
            a["labels"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(got.len(), 5, "all five arrive: {got:#?}");
    assert_eq!(ids.len(), 5, "once each");
}

#[test]
fn a_webhook_gets_the_alert_with_its_token() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("hooked-tool", "/bin/sleep");
    scratch.policy(
        "kill.yaml",
        &format!(
            "name: hooked\nmode: enforce\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [kill, alert]\n",
            tool.display()
        ),
    );
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let rx = webhook_receiver(server, 5);
    let config = format!(
        "alerts:\n  stdout: false\n  webhooks:\n    - {{ name: ops, url: 'http://{addr}/reflex', bearer_token: s3cret, headers: {{ X-Team: ops }} }}\n"
    );
    let _agent = scratch.start_with_config(&config);
    fire(&tool);
    let (headers, body) = rx.recv_timeout(WAIT).expect("the webhook is called");
    let headers = headers.join("").to_ascii_lowercase();
    assert!(
        headers.contains("authorization: bearer s3cret"),
        "{headers}"
    );
    assert!(headers.contains("x-team: ops"), "{headers}");
    let alert: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(alert["policy"], "hooked");
}

/// Falcosidekick decodes this body into its `FalcoPayload`: the fields it
/// requires are there with the types it reads, and Falco's field names.
#[test]
fn a_falcosidekick_webhook_gets_falcos_alert_form() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("sidekicked-tool", "/bin/sleep");
    scratch.policy(
        "kill.yaml",
        &format!(
            "name: sidekicked\nmode: enforce\nlabels: {{ team: sec }}\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [kill, {{ alert: {{ severity: critical }} }}]\n",
            tool.display()
        ),
    );
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let rx = webhook_receiver(server, 5);
    let config = format!(
        "alerts:\n  stdout: false\n  webhooks:\n    - {{ name: sidekick, url: 'http://{addr}/', format: falcosidekick }}\n"
    );
    let _agent = scratch.start_with_config(&config);
    fire(&tool);
    let (_, body) = rx.recv_timeout(WAIT).expect("the webhook is called");
    let payload: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(payload["rule"], "sidekicked", "{payload}");
    assert_eq!(payload["priority"], "Critical");
    assert_eq!(payload["source"], "reflex");
    assert!(payload["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    let time = payload["time"].as_str().expect("time");
    assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    assert!(payload["output"].as_str().unwrap().contains("sidekicked"));
    let tags = payload["tags"].as_array().expect("tags");
    assert!(tags.contains(&Value::from("team=sec")), "{tags:?}");
    let fields = &payload["output_fields"];
    assert_eq!(fields["proc.exepath"], tool.display().to_string());
    assert_eq!(fields["evt.type"], "exec");
    assert!(fields["proc.pid"].as_u64().is_some_and(|p| p > 0));
    assert_eq!(fields["reflex.mode"], "enforce");
    // Not the reflex form.
    assert!(payload.get("policy").is_none() && payload.get("event").is_none());
}
