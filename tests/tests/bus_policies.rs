//! Policies distributed through a real NATS key-value bucket: a pushed
//! set is enforced, a bad revision is refused by the agent, which keeps its
//! set and says so in a metric and in its status key.
use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, process::Command, time::Duration};

use reflex_tests::{
    ChildGuard, Scratch, eventually, metric, metrics_addr,
    nats::{NatsServer, kv_get},
    policy_alert, reflex_bin, require_root,
};

const WAIT: Duration = Duration::from_secs(60);

/// Writes `dir/FILE` as a policy file (owner-writable only).
fn write(dir: &Path, file: &str, text: &str) {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(file);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
}

/// `reflex policy push DIR --bus URL EXTRA`: exit code and stdout.
fn push(dir: &Path, url: &str, extra: &[&str]) -> (i32, String) {
    let out = Command::new(reflex_bin())
        .args(["policy", "push"])
        .arg(dir)
        .args(["--bus", url])
        .args(extra)
        .output()
        .expect("running reflex policy push");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("push: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout)
}

/// The revision id `push` printed.
fn revision(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "revision")
        .nth(1)
        .expect("push names the revision")
        .to_string()
}

/// Runs `tool 30`; whether it was killed (ended well before its 30 s).
fn killed(tool: &Path) -> bool {
    let mut child = ChildGuard::spawn(Command::new(tool).arg("30"));
    child.wait_for(Duration::from_secs(20)).is_some()
}

#[test]
fn a_pushed_set_is_enforced_and_a_bad_revision_is_refused_and_reported() {
    require_root();
    let server = NatsServer::start();
    let scratch = Scratch::new();
    let tool = scratch.tool("fleet-tool", "/bin/sleep");
    let good = scratch.path("push-good");
    write(
        &good,
        "kill.yaml",
        &format!(
            "name: fleet-kill\nmode: enforce\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [kill, alert]\n",
            tool.display()
        ),
    );
    let bad = scratch.path("push-bad");
    write(
        &bad,
        "kill.yaml",
        &fs::read_to_string(good.join("kill.yaml")).unwrap(),
    );
    write(
        &bad,
        "broken.yaml",
        "name: broken\non:\n  exec: { paths: [/x] }\ndo: [explode]\n",
    );

    // A set with errors is not pushed unless asked.
    let (code, out) = push(&bad, &server.url(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken.yaml:"), "{out}");

    let (code, out) = push(&good, &server.url(), &[]);
    assert_eq!(code, 0, "{out}");
    let first = revision(&out);

    let agent = scratch.start_with_config(&format!(
        "bus: {{ url: '{}', host: test-host-2, policies: {{}} }}\n",
        server.url()
    ));
    let addr = metrics_addr(&agent);
    let in_force = format!("reflex_policy_revision{{revision=\"{first}\"}}");
    assert!(
        eventually(WAIT, || metric(addr, &in_force) == 1.0),
        "the agent runs revision {first}"
    );
    assert!(killed(&tool), "the pushed policy is enforced");
    policy_alert(&agent, WAIT, "fleet-kill", |_| true);
    let status = kv_get(&server.url(), "reflex-status", "test-host-2").expect("a status key");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["revision"], first.as_str());

    let (code, out) = push(&bad, &server.url(), &["--unchecked"]);
    assert_eq!(code, 0, "{out}");
    let second = revision(&out);
    assert_ne!(first, second);
    assert!(
        eventually(WAIT, || metric(
            addr,
            "reflex_policy_revisions_total{result=\"rejected\"}"
        ) == 1.0),
        "the agent rejects revision {second}"
    );
    assert_eq!(metric(addr, &in_force), 1.0, "the first revision stays");
    let mut status = serde_json::Value::Null;
    assert!(eventually(WAIT, || {
        status = kv_get(&server.url(), "reflex-status", "test-host-2")
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        status["rejected"]["revision"] == second.as_str()
    }));
    assert_eq!(status["revision"], first.as_str(), "{status}");
    let errors = status["rejected"]["errors"].to_string();
    assert!(errors.contains("broken.yaml:4:"), "{status}");
    assert!(killed(&tool), "the running set stays in force");
}
