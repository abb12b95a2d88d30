//! File changes have their own lane through every stage (issue #14): a
//! watched file changed right after a UDP `connect()` flood that an
//! unthrottled monitor policy alerts on is put back while the flood's
//! alerts are still queued, not after them. The fact checked is an order
//! the agent writes itself: in `alerts.jsonl` the revert's alert comes
//! before most of the flood's alerts. With one shared queue it came after
//! nearly all of them: every connect the agent had read was queued ahead
//! of the change, and only those still in the kernel's ring buffer when
//! the change was read could follow it (0 and 1 381 of 12 000 in two runs
//! of the old binary here; 9 937 to 11 367 after it with lanes). Loopback
//! only; the flooding user, its process and every file are the test's own.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use reflex_tests::{
    ChildGuard, Scratch, eventually, free_port, metrics_addr, programs, require_root, scrape,
    users::TestUser,
};
use serde_json::Value;

/// Connects of the flood: all of it fits in the agent's bulk queue
/// (`event_queue`, 16 384), so with a shared queue every one of them is
/// ahead of the change, and none is lost in the kernel.
const FLOOD: u64 = 12_000;
const BASELINE: &str = "listen nowhere\n";
/// Upper bounds for what must happen; a revert behind the flood still
/// lands within them, so the order below is what fails, not a timeout.
const WAIT: Duration = Duration::from_secs(120);

/// Waits until `path` holds `content` again, polling every millisecond.
fn restored(path: &Path, content: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if fs::read_to_string(path).is_ok_and(|c| c == content) {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

/// The policy of each alert in `log`, in order.
fn policies(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["policy"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_revert_overtakes_the_alerts_of_a_connect_flood() {
    require_root();
    let scratch = Scratch::new();
    fs::set_permissions(scratch.path(""), fs::Permissions::from_mode(0o755)).unwrap();
    let user = TestUser::create("lanes");
    let abuse = programs::compile(&scratch.path("bin"), "abuse", programs::ABUSE_PROGRAM);
    fs::set_permissions(scratch.path("bin"), fs::Permissions::from_mode(0o755)).unwrap();

    let watched = scratch.path("etc/app.conf");
    fs::create_dir(scratch.path("etc")).unwrap();
    fs::write(&watched, BASELINE).unwrap();
    // 64 loopback ports nobody else on the host uses while the test runs.
    let port = free_port().clamp(1024, 65_000);
    scratch.policy(
        "lanes.yaml",
        &format!(
            "name: guard\nmode: enforce\non:\n  file: {{ paths: [\"{watched}\"] }}\ndo: [revert, alert]\n---\n\
             name: flood\nmode: monitor\non:\n  connect: {{ direction: [outbound], remote: [\"127.0.0.1/32\"], ports: [\"{port}-{last}\"], protocol: [udp] }}\ndo: [alert]\n",
            watched = watched.display(),
            last = port + 63,
        ),
    );
    let agent = scratch.start();
    let addr = metrics_addr(&agent);
    let connects = || scrape(addr).sum("reflex_events_total", &[("family", "connect")]);
    let before = connects();

    let mut flood = ChildGuard::spawn(
        user.command(&abuse)
            .args(["connects", &FLOOD.to_string(), &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let status = flood.wait_for(WAIT).expect("the flood ended");
    assert!(status.success(), "the flood ran: {status}");
    // Every connect of the flood is in the kernel's ring buffer or the
    // agent's queues now; the change comes after all of them.
    let changed = Instant::now();
    fs::write(&watched, "listen everywhere\n").unwrap();
    assert!(
        restored(&watched, BASELINE, WAIT),
        "the change was put back"
    );
    // Reported, not checked: how long a revert takes is the benchmark's.
    eprintln!("restored {:?} after the change", changed.elapsed());

    let log = scratch.path("state/alerts.jsonl");
    let done = || {
        let alerts = policies(&fs::read_to_string(&log).unwrap_or_default());
        let flood = alerts.iter().filter(|p| *p == "flood").count();
        alerts.iter().any(|p| p == "guard") && flood as f64 >= connects() - before
    };
    assert!(eventually(WAIT, done), "every alert was written");
    let alerts = policies(&fs::read_to_string(&log).unwrap());
    let total = alerts.iter().filter(|p| *p == "flood").count();
    let revert = alerts.iter().position(|p| p == "guard").unwrap();
    let after = alerts[revert..].iter().filter(|p| *p == "flood").count();
    assert_eq!(
        total as u64, FLOOD,
        "every connect of the flood was alerted, none lost"
    );
    eprintln!("revert alerted with {after} of {total} flood alerts still to come");
    assert!(
        after > 0,
        "the revert's alert came after all {total} alerts of the flood: it waited behind them"
    );
    assert!(
        2 * after > total,
        "most of the flood's alerts were written before the revert's ({after} of {total} after it)"
    );
}
