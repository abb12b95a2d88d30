//! Metrics as a real Prometheus sees them; loopback only.
use std::{
    fs,
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reflex_tests::{ChildGuard, Scratch, free_port, http_get, metrics_addr, require_root};

#[test]
fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    require_root();
    let scratch = Scratch::new();
    let agent = scratch.start();
    let addr = metrics_addr(&agent);
    for _ in 0..5 {
        Command::new("/bin/true").status().expect("run true");
    }

    let body = http_get(addr, "/metrics");
    for name in [
        "reflex_events_total",
        "reflex_events_lost_total",
        "reflex_process_table_entries",
        "reflex_probe_attached",
        "reflex_policies_loaded",
        "reflex_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(body.contains(name), "/metrics lacks {name}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (installed by cargo xtask setup)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );

    let port = free_port();
    let config = scratch.path("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: reflex\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .expect("prometheus config");
    let _prometheus = ChildGuard::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch.path("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let server: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        if std::net::TcpStream::connect_timeout(&server, Duration::from_millis(200)).is_err() {
            continue;
        }
        last = http_get(server, "/api/v1/query?query=sum(reflex_events_total)");
        let value: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        let scraped = value["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        if scraped.is_some_and(|v| v > 0.0) {
            let up = http_get(server, "/api/v1/query?query=up%7Bjob%3D%22reflex%22%7D");
            assert!(up.contains("\"1\""), "scrape target up: {up}");
            return;
        }
    }
    panic!("Prometheus never returned reflex_events_total > 0; last answer: {last}");
}
