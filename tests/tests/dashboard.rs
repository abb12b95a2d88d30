//! The shipped Grafana dashboard against a real Prometheus scraping a real
//! agent: every expression of every panel parses and returns data, and
//! names only metrics the agent exports. Loopback only.
use std::{
    collections::BTreeSet,
    fs,
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use reflex_tests::{
    Scratch, eventually, free_port, http_get, metrics_addr,
    prometheus::{Chart, Prometheus, draw},
    require_root, run_to_end, webhook_receiver,
};
use serde_json::Value;

const DASHBOARD: &str = include_str!("../../deploy/grafana/reflex.json");
/// Long enough to hold every sample the test makes.
const RANGE: &str = "2m";
const WAIT: Duration = Duration::from_secs(120);
/// Workload rounds, half a second apart, after the checks have their data.
const PICTURE_ROUNDS: usize = 40;

/// Policies that make every family's events and every action the panels
/// show: a revert, an in-kernel kill at exec, a blocked connect.
fn policies(scratch: &Scratch, victim: &str, port: u16) {
    fs::create_dir_all(scratch.path("managed")).unwrap();
    fs::write(scratch.path("managed/app.conf"), "good\n").unwrap();
    scratch.policy(
        "all.yaml",
        &format!(
            r#"name: managed
mode: enforce
on: {{ file: {{ paths: ["{dir}/app.conf"] }} }}
do: [revert, alert]
---
name: no-victim
mode: enforce
on: {{ exec: {{ paths: ["{victim}"] }} }}
do: [kill, alert]
---
name: no-port
mode: enforce
on: {{ connect: {{ direction: [outbound], remote: [127.0.0.2/32], ports: [{port}] }} }}
do: [block, alert]
"#,
            dir = scratch.path("managed").display()
        ),
    );
}

/// Round `n` of the workload: tampered files, a forbidden program, a
/// forbidden connect, in amounts that vary so the picture has a shape.
fn round(scratch: &Scratch, victim: &str, port: u16, n: usize) {
    for i in 0..=n % 4 {
        fs::write(scratch.path("managed/app.conf"), format!("tampered {i}\n")).unwrap();
    }
    if n.is_multiple_of(3) {
        run_to_end(&mut Command::new(victim), Duration::from_secs(10));
    }
    let to: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    for _ in 0..=n % 2 {
        let _ = TcpStream::connect_timeout(&to, Duration::from_secs(1));
    }
}

/// Labels of `label` in an instant query's result.
fn labels(answer: &Value, label: &str) -> BTreeSet<String> {
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["metric"][label].as_str().map(str::to_string))
        .collect()
}

/// Every PromQL expression of the dashboard, with its panel's title.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expr per target");
            out.push((
                panel["title"].as_str().unwrap().to_string(),
                expr.to_string(),
            ));
        }
    }
    out
}

#[test]
fn every_panel_of_the_dashboard_returns_data_from_a_real_prometheus() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    // Current Grafana's schema, and the two variables every panel uses.
    assert!(dashboard["schemaVersion"].as_u64() >= Some(36));
    let variables = &dashboard["templating"]["list"];
    assert_eq!(variables[0]["name"], "datasource");
    assert_eq!(variables[0]["type"], "datasource");
    assert_eq!(variables[1]["name"], "host");
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("instance=~\"$host\""), "{expr} ignores $host");
        }
    }

    require_root();
    let scratch = Scratch::new();
    let victim = scratch.tool("victim", "/bin/true");
    let victim = victim.to_str().unwrap().to_string();
    let port = free_port();
    policies(&scratch, &victim, port);
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let _delivered = webhook_receiver(sink, 100_000);
    let agent = scratch.start_with_config(&format!(
        "alerts:\n  stdout: false\n  webhooks:\n    - {{ name: ops, url: 'http://{sink_addr}/hook' }}\n"
    ));
    let addr = metrics_addr(&agent);
    let prometheus = Prometheus::start(&scratch, addr);
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();

    // The workload goes on until Prometheus holds at least three samples
    // of every action and every family: enough for rate() over RANGE.
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    loop {
        round(&scratch, &victim, port, n);
        n += 1;
        let actions = prometheus.query(&format!(
            "count_over_time(reflex_actions_total{{result=\"ok\"}}[{RANGE}]) >= 3"
        ));
        let families = prometheus.query(&format!(
            "count_over_time(reflex_events_total[{RANGE}]) >= 3"
        ));
        let actions = labels(&actions, "action");
        let families = labels(&families, "family");
        if ["revert", "kill", "block"]
            .iter()
            .all(|a| actions.contains(*a))
            && ["exec", "file", "connect"]
                .iter()
                .all(|f| families.contains(*f))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never held every action ({actions:?}) and family ({families:?})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // More rounds give the README's picture (not the checks) some length.
    for more in 0..PICTURE_ROUNDS {
        round(&scratch, &victim, port, n + more);
        std::thread::sleep(Duration::from_millis(500));
    }

    let instance = addr.to_string();
    let concrete = |expr: &str| {
        expr.replace("$host", &instance)
            .replace("$__rate_interval", RANGE)
    };
    let mut failures = Vec::new();
    for (title, expr) in expressions(&dashboard) {
        let answer = prometheus.query(&concrete(&expr));
        let results = answer["data"]["result"].as_array().map_or(0, Vec::len);
        if answer["status"] != "success" || results == 0 {
            failures.push(format!("{title}: {expr}: {answer}"));
        }
    }
    let host = &variables[1]["query"]["query"];
    assert_eq!(host, "label_values(reflex_build_info, instance)");
    assert!(labels(&prometheus.query("reflex_build_info"), "instance").contains(&instance));
    assert!(
        failures.is_empty(),
        "panels without data:\n{}",
        failures.join("\n")
    );

    // No panel names a metric the agent does not export.
    let exported = http_get(addr, "/metrics");
    for (title, expr) in expressions(&dashboard) {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| t.starts_with("reflex_") || t.starts_with("process_"))
        {
            assert!(
                exported.lines().any(|l| l
                    .strip_prefix(name)
                    .is_some_and(|r| r.starts_with(['{', ' ']))),
                "{title}: {name} is not in the agent's /metrics"
            );
        }
    }

    picture(&prometheus, &dashboard, &concrete, started);
}

/// The README's figure: the time series panels over the test, as an SVG
/// at `REFLEX_DASHBOARD_SVG` (default `target/dashboard/reflex.svg`).
fn picture(
    prometheus: &Prometheus,
    dashboard: &Value,
    concrete: &dyn Fn(&str) -> String,
    started: Duration,
) {
    let end = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut charts = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "timeseries" {
            continue;
        }
        let mut chart = Chart {
            title: panel["title"].as_str().unwrap().to_string(),
            series: Vec::new(),
        };
        for target in panel["targets"].as_array().unwrap() {
            // The figure shows the test's few seconds: rates over 10 s.
            let expr = concrete(target["expr"].as_str().unwrap()).replace(RANGE, "10s");
            let extra = format!("&start={}&end={}&step=1", started.as_secs(), end.as_secs());
            let answer = prometheus.api("query_range", &expr, &extra);
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            for series in answer["data"]["result"].as_array().into_iter().flatten() {
                let mut name = legend.to_string();
                for (k, v) in series["metric"].as_object().into_iter().flatten() {
                    name = name.replace(&format!("{{{{{k}}}}}"), v.as_str().unwrap_or(""));
                }
                let points = series["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        let t = p[0].as_f64()?;
                        let v = p[1].as_str()?.parse::<f64>().ok()?;
                        Some((t, v))
                    })
                    .collect();
                chart.series.push((name, points));
            }
        }
        charts.push(chart);
    }
    let path = std::env::var_os("REFLEX_DASHBOARD_SVG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard/reflex.svg")
        });
    draw(
        &path,
        "reflex dashboard (deploy/grafana/reflex.json) during tests/tests/dashboard.rs",
        &charts,
    );
    assert!(eventually(Duration::from_secs(1), || path.exists()));
    eprintln!("dashboard picture: {}", path.display());
}
