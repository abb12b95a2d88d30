//! Growth in watched directories (issue 14): ten thousand files created in
//! about a second, by an ordinary user, in a directory a monitor glob and a
//! revert glob both cover, are all alerted and all removed, at a bounded
//! cost to the agent; files a glob watched are forgotten when they go; a
//! kernel watch map made too small is an error with a metric, and the
//! files past it are still watched. Every file, directory and process here
//! is the test's own.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use reflex_tests::{Agent, Scratch, eventually, http_get, metric, metrics_addr, require_root};

/// Files the burst creates.
const FILES: usize = 10_000;

/// Agent CPU (user + system) the whole burst may cost. Generous: the
/// linear agent needs a few seconds on this 2-core machine, one look
/// through the growing directory per new file would need minutes.
const CPU_BOUND: Duration = Duration::from_secs(60);

/// Agent peak RSS (`VmHWM`) after the burst.
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// A scratch area with `spool/` (writable by everyone, for `nobody`)
/// under `policies`, given the directory's path.
fn setup(policies: &[(&str, String)], config: &str) -> (Scratch, PathBuf, Agent) {
    let scratch = Scratch::new();
    let spool = scratch.path("spool");
    fs::create_dir(&spool).unwrap();
    fs::set_permissions(scratch.path(""), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&spool, fs::Permissions::from_mode(0o777)).unwrap();
    for (name, text) in policies {
        scratch.policy(name, &text.replace("SPOOL", spool.to_str().unwrap()));
    }
    let agent = scratch.start_with_config(config);
    (scratch, spool, agent)
}

const MONITOR: &str =
    "name: uploads-seen\nmode: monitor\non: { file: { paths: [\"SPOOL/*.log\"] } }\ndo: [alert]\n";
const REVERT: &str = "name: uploads-removed\nmode: enforce\non: { file: { paths: [\"SPOOL/*.log\"] } }\ndo: [revert, alert]\n";

/// `sh -c SCRIPT` as `nobody`, with no groups.
fn as_nobody(script: &str) {
    reflex_tests::users::as_nobody(script, Duration::from_secs(120));
}

/// Creates `count` empty files `f0.log` … in `dir` as `nobody` (a shell
/// loop of builtin redirections: about a second for ten thousand).
fn create(dir: &Path, count: usize) -> Duration {
    let start = Instant::now();
    as_nobody(&format!(
        "cd {} && i=0; while [ $i -lt {count} ]; do : > f$i.log; i=$((i+1)); done",
        dir.display()
    ));
    start.elapsed()
}

/// Alerts in `alerts.jsonl` of `policy` whose file change is `change`.
fn alerts(scratch: &Scratch, policy: &str, change: &str) -> usize {
    let log = fs::read_to_string(scratch.path("state/alerts.jsonl")).unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["policy"] == policy && v["event"]["file"]["change"] == change)
        .count()
}

/// (user + system CPU time, peak RSS in KiB) of process `pid`.
fn usage(pid: u32) -> (Duration, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; fields[0] is field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let hwm = reflex_tests::peak_rss_kib(pid);
    (Duration::from_millis(ticks * 1000 / hz), hwm)
}

/// Distinct files `policy` alerted a change other than their creation of.
fn changed(scratch: &Scratch, policy: &str) -> usize {
    let log = fs::read_to_string(scratch.path("state/alerts.jsonl")).unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["policy"] == policy && v["event"]["file"]["change"] != "create")
        .filter_map(|v| v["event"]["file"]["path"].as_str().map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// The changes `policy` alerted, counted by kind.
fn kinds(scratch: &Scratch, policy: &str) -> std::collections::BTreeMap<String, usize> {
    let log = fs::read_to_string(scratch.path("state/alerts.jsonl")).unwrap_or_default();
    let mut kinds = std::collections::BTreeMap::new();
    for v in log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        if v["policy"] == policy {
            *kinds
                .entry(v["event"]["file"]["change"].to_string())
                .or_default() += 1;
        }
    }
    kinds
}

fn files_left(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

#[test]
fn ten_thousand_new_files_are_all_answered_at_a_linear_cost() {
    require_root();
    let (scratch, spool, agent) = setup(
        &[
            ("seen.yaml", MONITOR.into()),
            ("removed.yaml", REVERT.into()),
        ],
        "alerts: { stdout: false }\n",
    );
    let pid = agent.guard.pid();
    let (cpu_before, _) = usage(pid);
    let took = create(&spool, FILES);
    eprintln!("created {FILES} files in {took:?}");
    let done = eventually(Duration::from_secs(300), || {
        alerts(&scratch, "uploads-removed", "create") >= FILES && files_left(&spool) == 0
    });
    let (cpu_after, hwm) = usage(pid);
    let cpu = cpu_after - cpu_before;
    let seen = alerts(&scratch, "uploads-seen", "create");
    let removed = alerts(&scratch, "uploads-removed", "create");
    eprintln!(
        "agent: {cpu:?} CPU for the burst, peak RSS {} MiB; alerts: {seen} seen, {removed} removed; {} files left",
        hwm / 1024,
        files_left(&spool)
    );
    assert!(done, "every new file removed and alerted");
    assert_eq!(seen, FILES, "every new file alerted by the monitor policy");
    assert!(cpu < CPU_BOUND, "agent CPU {cpu:?} over {CPU_BOUND:?}");
    assert!(
        hwm < RSS_BOUND_KIB,
        "agent peak RSS {hwm} KiB over {RSS_BOUND_KIB} KiB"
    );
    // The removed files are forgotten: nothing of them stays watched.
    let addr = metrics_addr(&agent);
    let series = "reflex_watch_map_entries{map=\"files\"}";
    assert!(
        http_get(addr, "/metrics").contains(series),
        "the agent shows its kernel watch map's use"
    );
    assert!(
        eventually(Duration::from_secs(10), || { metric(addr, series) == 0.0 }),
        "no kernel watch entry is left of the removed files"
    );
}

#[test]
fn files_a_glob_watched_are_forgotten_when_removed() {
    require_root();
    let (scratch, spool, agent) = setup(
        &[("seen.yaml", MONITOR.into())],
        "alerts: { stdout: false }\n",
    );
    let addr = metrics_addr(&agent);
    let entries = |map: &str| metric(addr, &format!("reflex_watch_map_entries{{map=\"{map}\"}}"));
    let (files, names) = (entries("files"), entries("names"));
    create(&spool, 500);
    assert!(
        eventually(Duration::from_secs(60), || {
            entries("files") >= files + 500.0 && alerts(&scratch, "uploads-seen", "create") == 500
        }),
        "500 new files watched: {} kernel entries",
        entries("files")
    );
    assert!(entries("names") >= names + 500.0);
    as_nobody(&format!("rm -f {}/*.log", spool.display()));
    assert!(
        eventually(Duration::from_secs(60), || {
            entries("files") == files && entries("names") == names
        }),
        "the watch maps shrink back: files {} (was {files}), names {} (was {names})",
        entries("files"),
        entries("names")
    );
    // An unlink is told as `unlink`, or as `attrib` (the link count) when
    // fanotify's notices of it settle apart.
    assert!(
        eventually(Duration::from_secs(30), || changed(
            &scratch,
            "uploads-seen"
        ) == 500),
        "each removal alerted: {:?}",
        kinds(&scratch, "uploads-seen")
    );
}

#[test]
fn a_full_watch_map_is_an_error_and_its_files_stay_watched() {
    require_root();
    let (scratch, spool, agent) = setup(
        &[("seen.yaml", MONITOR.into())],
        "alerts: { stdout: false }\nwatch: { max_files: 64 }\n",
    );
    let addr = metrics_addr(&agent);
    assert_eq!(
        metric(addr, "reflex_watch_map_capacity{map=\"files\"}"),
        64.0
    );
    create(&spool, 200);
    assert!(
        eventually(Duration::from_secs(60), || {
            alerts(&scratch, "uploads-seen", "create") == 200
        }),
        "every new file alerted, {} were",
        alerts(&scratch, "uploads-seen", "create")
    );
    assert_eq!(
        metric(addr, "reflex_watch_map_entries{map=\"files\"}"),
        64.0
    );
    assert!(
        metric(addr, "reflex_watch_refused_total{reason=\"map_full\"}") >= 136.0,
        "each file past the map is counted"
    );
    // Every file, in the kernel map or past it, is still watched: a
    // change to each is alerted.
    as_nobody(&format!(
        "cd {} && i=0; while [ $i -lt 200 ]; do echo changed >> f$i.log; i=$((i+1)); done",
        spool.display()
    ));
    assert!(
        eventually(Duration::from_secs(60), || {
            changed(&scratch, "uploads-seen") == 200
        }),
        "every file's change alerted: {:?}",
        kinds(&scratch, "uploads-seen")
    );
}
