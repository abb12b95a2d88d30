//! Metrics as a real Prometheus sees them; loopback only.
use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reflex_tests::{Scratch, http_get, metrics_addr, require_root};

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

    let prometheus = reflex_tests::prometheus::Prometheus::start(&scratch, addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        last = prometheus.query("sum(reflex_events_total)");
        let scraped = last["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        if scraped.is_some_and(|v| v > 0.0) {
            let up = prometheus.query("up{job=\"reflex\"}");
            assert_eq!(
                up["data"]["result"][0]["value"][1], "1",
                "scrape target up: {up}"
            );
            return;
        }
    }
    panic!("Prometheus never returned reflex_events_total > 0; last answer: {last}");
}
