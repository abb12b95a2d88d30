//! Faults and hostile input against the real agent: SIGKILL in the middle of
//! a revert, a full state directory, a policy directory that disappears,
//! symlinks swapped into watched paths. Every file, mount and process here
//! is the test's own.
use std::{
    collections::BTreeSet,
    fs,
    net::TcpListener,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use reflex_tests::{
    Agent, Scratch, free_port, http_get, metrics_addr, require_root, webhook_receiver,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

/// One test at a time: the SIGKILL test counts the BPF programs loaded on
/// the host, which must be its own agent's only.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ids of the BPF programs loaded on the host.
fn program_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

/// Writes a root-owned 0644 file.
fn make_file(path: &Path, content: &[u8]) {
    fs::write(path, content).expect("write file");
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// Polls `check` every 5 ms until it holds or `limit` passes.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The stdout alert of `policy` about `path`.
fn alert(agent: &Agent, policy: &str, path: &Path) -> Value {
    let path = path.to_str().expect("utf-8").to_string();
    let line = agent
        .stdout_line(WAIT, |l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["policy"] == policy && v["event"]["file"]["path"] == path.as_str())
        })
        .unwrap_or_else(|| panic!("no alert of {policy} about {path}"));
    serde_json::from_str(&line).expect("alert JSON")
}

/// A metric's value from `/metrics` (0 when absent).
fn metric(agent: &Agent, series: &str) -> f64 {
    http_get(metrics_addr(agent), "/metrics")
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn temps_beside(file: &Path) -> Vec<String> {
    let prefix = format!(
        ".{}.reflex-",
        file.file_name().expect("name").to_string_lossy()
    );
    fs::read_dir(file.parent().expect("parent"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn revert_policy(name: &str, path: &Path) -> String {
    format!(
        "name: {name}\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [revert, alert]\n",
        path.display()
    )
}

#[test]
fn sigkill_mid_revert_leaves_whole_files_and_no_programs_and_a_restart_resumes() {
    require_root();
    let _serial = serial();
    let scratch = Scratch::new();
    let dir = scratch.path("managed");
    fs::create_dir(&dir).unwrap();
    // Large enough that writing and syncing the restore takes tens of ms.
    let big = dir.join("big.conf");
    let baseline: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    make_file(&big, &baseline);
    let note = dir.join("note.conf");
    make_file(&note, b"note\n");
    scratch.policy("big.yaml", &revert_policy("big", &big));
    scratch.policy(
        "note.yaml",
        &format!(
            "name: note\nmode: monitor\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [alert]\n",
            note.display()
        ),
    );
    // The webhook is down until the restart: alerts wait in the spool.
    let port = free_port();
    let config =
        format!("alerts:\n  webhooks:\n    - {{ name: ops, url: 'http://127.0.0.1:{port}/x' }}\n");

    let before = program_ids();
    let mut agent = scratch.start_with_config(&config);
    let ours: BTreeSet<u32> = program_ids().difference(&before).copied().collect();
    assert!(!ours.is_empty(), "the agent's programs are visible");

    make_file(&note, b"changed note\n");
    alert(&agent, "note", &note);
    assert!(
        eventually(WAIT, || metric(
            &agent,
            "reflex_alert_spool_entries{sink=\"ops\"}"
        ) >= 1.0),
        "the note alert waits in the spool"
    );

    fs::write(&big, "tampered\n").unwrap();
    assert!(
        eventually(WAIT, || !temps_beside(&big).is_empty()),
        "the restore's temporary file appears"
    );
    agent.guard.signal(Signal::SIGKILL);
    agent.guard.wait_for(WAIT).expect("the agent dies");

    let now = fs::read(&big).unwrap();
    assert!(
        now == b"tampered\n" || now == baseline,
        "the target is whole: {} bytes",
        now.len()
    );
    let left = || -> BTreeSet<u32> { program_ids().intersection(&ours).copied().collect() };
    assert!(
        eventually(WAIT, || left().is_empty()),
        "programs still loaded after SIGKILL: {:?}",
        left()
    );

    // Restarted: the stale temporary file goes, the file comes back from
    // the stored baseline (not re-recorded from the tampered file), and
    // the spooled alert is delivered.
    let server = TcpListener::bind(("127.0.0.1", port)).expect("webhook port");
    let received = webhook_receiver(server, 8);
    let agent = scratch.start_with_config(&config);
    assert!(
        eventually(WAIT, || fs::read(&big).is_ok_and(|c| c == baseline)),
        "restored from the stored baseline after the restart"
    );
    assert!(temps_beside(&big).is_empty(), "{:?}", temps_beside(&big));
    let mut note_alerts = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok((_, body)) = received.recv_timeout(left) else {
            break;
        };
        let alert: Value = serde_json::from_slice(&body).expect("JSON");
        if alert["policy"] == "note" {
            note_alerts += 1;
            // Give a duplicate the chance to show up.
            std::thread::sleep(Duration::from_millis(500));
            if received.try_recv().is_ok_and(|(_, b)| {
                serde_json::from_slice::<Value>(&b).is_ok_and(|v| v["policy"] == "note")
            }) {
                note_alerts += 1;
            }
            break;
        }
    }
    assert_eq!(note_alerts, 1, "the spooled alert arrives once");
    drop(agent);
}

/// A tmpfs mounted over a directory for the test, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Self {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        Self(dir.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_state_directory_is_reported_and_not_fatal() {
    require_root();
    let _serial = serial();
    let scratch = Scratch::new();
    let state = scratch.path("state");
    let _mount = Mount::tmpfs(&state, "1m");
    let dir = scratch.path("managed");
    fs::create_dir(&dir).unwrap();
    let app = dir.join("app.conf");
    make_file(&app, b"good\n");
    scratch.policy("app.yaml", &revert_policy("app", &app));
    let mut agent = scratch.start();

    // Fill the state directory to the last byte.
    let filler = state.join("filler");
    let chunk = vec![0u8; 64 << 10];
    {
        use std::io::Write as _;
        let mut f = fs::File::create(&filler).unwrap();
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..512]).is_ok() {}
        while f.write_all(&chunk[..1]).is_ok() {}
    }

    fs::write(&app, "tampered\n").unwrap();
    alert(&agent, "app", &app);
    assert!(
        eventually(WAIT, || fs::read(&app).is_ok_and(|c| c == b"good\n")),
        "the revert works with the state directory full"
    );
    assert!(
        agent
            .log_line(WAIT, "writing an alert; it is not in the alert log")
            .is_some()
    );
    assert!(
        metric(
            &agent,
            "reflex_alerts_dropped_total{reason=\"write\",sink=\"alert_log\"}"
        ) >= 1.0
    );
    assert!(
        agent.guard.wait_for(Duration::ZERO).is_none(),
        "still running"
    );

    // Space again: the next alert is in the log, and the log holds whole lines.
    fs::remove_file(&filler).unwrap();
    fs::write(&app, "tampered again\n").unwrap();
    alert(&agent, "app", &app);
    let log = state.join("alerts.jsonl");
    assert!(
        eventually(WAIT, || fs::read_to_string(&log)
            .is_ok_and(|t| t.contains("\"policy\":\"app\""))),
        "the alert log takes alerts again"
    );
    for line in fs::read_to_string(&log).unwrap().lines() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("a broken line in the alert log ({e}): {line}"));
    }
    drop(agent);
}

#[test]
fn a_policy_directory_that_disappears_keeps_the_running_set() {
    require_root();
    let _serial = serial();
    let scratch = Scratch::new();
    let watched = scratch.path("watched.conf");
    make_file(&watched, b"x\n");
    let monitor = |name: &str| {
        format!(
            "name: {name}\nmode: monitor\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [alert]\n",
            watched.display()
        )
    };
    scratch.policy("first.yaml", &monitor("first"));
    let agent = scratch.start();

    fs::remove_dir_all(scratch.path("policies")).unwrap();
    assert!(
        agent
            .log_line(WAIT, "the policy directory is gone")
            .is_some()
    );
    make_file(&watched, b"y\n");
    alert(&agent, "first", &watched);
    assert_eq!(metric(&agent, "reflex_policies_loaded "), 1.0);

    // Back, with another policy: watched again and loaded.
    fs::create_dir(scratch.path("policies")).unwrap();
    scratch.policy("second.yaml", &monitor("second"));
    assert!(agent.log_line(WAIT, "policy directory is back").is_some());
    assert!(agent.log_line(WAIT, "policies reloaded").is_some());
    make_file(&watched, b"z\n");
    alert(&agent, "second", &watched);
}

#[test]
fn a_symlink_swapped_into_a_watched_path_is_not_followed() {
    require_root();
    let _serial = serial();
    let scratch = Scratch::new();
    let outside = scratch.path("outside");
    fs::create_dir(&outside).unwrap();
    let secret = outside.join("secret");
    make_file(&secret, b"secret\n");
    let decoy = outside.join("app.conf");
    make_file(&decoy, b"outside\n");

    // The watched file itself replaced by a symlink to another file.
    let dir = scratch.path("managed");
    fs::create_dir(&dir).unwrap();
    let app = dir.join("app.conf");
    make_file(&app, b"good\n");
    // Its directory replaced by a symlink to another directory.
    let dir2 = scratch.path("managed2");
    fs::create_dir(&dir2).unwrap();
    let app2 = dir2.join("app.conf");
    make_file(&app2, b"good2\n");
    scratch.policy("app.yaml", &revert_policy("app", &app));
    scratch.policy("app2.yaml", &revert_policy("app2", &app2));
    let agent = scratch.start();

    let link = dir.join(".swap");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    fs::rename(&link, &app).unwrap();
    alert(&agent, "app", &app);
    assert!(
        eventually(WAIT, || fs::symlink_metadata(&app)
            .is_ok_and(|m| m.is_file())
            && fs::read(&app).is_ok_and(|c| c == b"good\n")),
        "the symlink itself is replaced by the baseline"
    );
    assert_eq!(fs::read(&secret).unwrap(), b"secret\n");
    assert_eq!(fs::metadata(&secret).unwrap().mode() & 0o7777, 0o644);

    let real = scratch.path("managed2.real");
    fs::rename(&dir2, &real).unwrap();
    std::os::unix::fs::symlink(&outside, &dir2).unwrap();
    fs::write(real.join("app.conf"), "tampered\n").unwrap();
    let reported = alert(&agent, "app2", &app2);
    let revert = reported["results"]
        .as_array()
        .and_then(|r| r.iter().find(|a| a["action"] == "revert"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(revert["ok"], false, "the revert is refused: {reported}");
    assert_eq!(fs::read(&decoy).unwrap(), b"outside\n");
    let stray: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(stray.len(), 2, "nothing new outside: {stray:?}");
    let _ = fs::remove_file(&dir2);
}
