//! Attacks on watched-directory growth (issue 14), by an ordinary user:
//! new entries spread over thousands of subdirectories of a `**` glob must
//! cost the agent work in proportion to them (not a look at every watched
//! directory per entry), and covered files planted behind thousands of
//! decoys are all found and removed. Every file, directory and process
//! here is the test's own.
use std::{fs, os::unix::fs::PermissionsExt as _, path::PathBuf, time::Duration};

use reflex_tests::{
    Agent, Scratch, eventually, holds, http_get, metric, metrics_addr, require_root,
};

/// `sh -c SCRIPT` as `nobody`, with no groups.
fn as_nobody(script: &str) {
    reflex_tests::users::as_nobody(script, Duration::from_secs(120));
}

/// A scratch area with `spool/` (writable by everyone, for `nobody`) and
/// the revert policy `uploads-removed` on `glob` (`SPOOL` for its path).
fn scratch(glob: &str) -> (Scratch, PathBuf) {
    let scratch = Scratch::new();
    let spool = scratch.path("spool");
    fs::create_dir(&spool).unwrap();
    fs::set_permissions(scratch.path(""), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&spool, fs::Permissions::from_mode(0o777)).unwrap();
    let glob = glob.replace("SPOOL", spool.to_str().unwrap());
    scratch.policy(
        "removed.yaml",
        &format!(
            "name: uploads-removed\nmode: enforce\non: {{ file: {{ paths: [\"{glob}\"] }} }}\ndo: [revert, alert]\n"
        ),
    );
    (scratch, spool)
}

/// Paths `policy` alerted a change of.
fn alerted(scratch: &Scratch, policy: &str) -> Vec<String> {
    let log = fs::read_to_string(scratch.path("state/alerts.jsonl")).unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["policy"] == policy)
        .filter_map(|v| v["event"]["file"]["path"].as_str().map(str::to_string))
        .collect()
}

/// Subdirectories made before the agent starts, one new file in each after.
const SUBDIRS: usize = 5_000;

#[test]
fn new_entries_over_many_subdirectories_cost_linear_work() {
    require_root();
    let (scratch, spool) = scratch("SPOOL/**/*.conf");
    let watched = spool.join("app.conf");
    fs::write(&watched, "good\n").unwrap();
    as_nobody(&format!(
        "cd {} && seq -f d%g 0 {} | xargs mkdir",
        spool.display(),
        SUBDIRS - 1
    ));
    let agent: Agent = scratch.start_with_config("alerts: { stdout: false }\n");
    let addr = metrics_addr(&agent);
    let series = "reflex_watch_scan_entries_total";
    assert!(
        http_get(addr, "/metrics").contains(series),
        "the agent shows what its looks through directories cost"
    );
    let before = metric(addr, series);
    // A name no policy covers, in every subdirectory: each is a notice
    // about its own directory.
    as_nobody(&format!(
        "cd {} && i=0; while [ $i -lt {SUBDIRS} ]; do : > d$i/a.txt; i=$((i+1)); done",
        spool.display()
    ));
    // The unrelated watched file, changed after the burst, is reverted and
    // alerted.
    fs::write(&watched, "bad\n").unwrap();
    assert!(
        holds(&watched, "good\n", Duration::from_secs(300)),
        "the watched file changed after the burst is reverted"
    );
    let path = watched.to_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(60), || alerted(
            &scratch,
            "uploads-removed"
        )
        .contains(&path)),
        "its revert is alerted"
    );
    // Every notice's look has been made once the backlog is empty; the
    // work is a few entries per notice, where a look at every watched
    // directory per notice would be SUBDIRS per notice.
    assert!(
        eventually(Duration::from_secs(300), || metric(
            addr,
            "reflex_watch_scan_backlog"
        ) == 0.0),
        "the looks are all made"
    );
    let cost = metric(addr, series) - before;
    eprintln!("{cost} entries looked at for {SUBDIRS} new entries in as many directories");
    assert!(
        cost <= (20 * SUBDIRS) as f64,
        "{cost} entries looked at for {SUBDIRS} notices"
    );
}

/// Names no policy covers, made before the covered files come in.
const DECOYS: usize = 2_000;

/// Covered files renamed in behind the decoys.
const PLANTED: usize = 5;

#[test]
fn files_planted_behind_decoys_are_all_removed() {
    require_root();
    let (scratch, spool) = scratch("SPOOL/*.conf");
    let elsewhere = scratch.path("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o777)).unwrap();
    // Half the decoys are there at start, half come after: whatever order
    // the filesystem lists names in, the planted files are not all among
    // the first `max_scan` entries of a look.
    as_nobody(&format!(
        "cd {} && i=0; while [ $i -lt {} ]; do : > x$i; i=$((i+1)); done",
        spool.display(),
        DECOYS / 2
    ));
    let agent: Agent =
        scratch.start_with_config("alerts: { stdout: false }\nwatch: { max_scan: 1000 }\n");
    let addr = metrics_addr(&agent);
    as_nobody(&format!(
        "cd {} && i={}; while [ $i -lt {DECOYS} ]; do : > x$i; i=$((i+1)); done; \
         i=0; while [ $i -lt {PLANTED} ]; do echo evil > {}/evil$i.conf; mv {}/evil$i.conf evil$i.conf; i=$((i+1)); done",
        spool.display(),
        DECOYS / 2,
        elsewhere.display(),
        elsewhere.display()
    ));
    let planted: Vec<PathBuf> = (0..PLANTED)
        .map(|i| spool.join(format!("evil{i}.conf")))
        .collect();
    let gone = eventually(Duration::from_secs(120), || {
        planted.iter().all(|p| !p.exists())
    });
    let left: Vec<_> = planted.iter().filter(|p| p.exists()).collect();
    assert!(gone, "every planted file is removed; left: {left:?}");
    // The alert follows the removal.
    let paths: Vec<String> = planted
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    let all_alerted = || {
        let alerts = alerted(&scratch, "uploads-removed");
        paths.iter().all(|p| alerts.contains(p))
    };
    assert!(
        eventually(Duration::from_secs(60), all_alerted),
        "every planted file alerted: {:?}",
        alerted(&scratch, "uploads-removed")
    );
    assert!(
        http_get(addr, "/metrics").contains("reflex_watch_scan_cut_total{stage=\"growth\"}"),
        "the agent counts looks cut at watch.max_scan"
    );
}
