//! Changes to a watched file made where the syscall probes of open, write
//! and close do not look: through io_uring, a descriptor held past the
//! settle time and written at the last moment, a shared mapping written
//! after close and left to the kernel at exit, and calls through
//! `/proc/self/fd/N`. Each is reverted and alerted once, naming the
//! process that did it. Every file and process here is the test's own.
use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reflex_tests::{ChildGuard, Scratch, programs, require_root};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

const POLICY: &str = "name: managed\nmode: enforce\non:\n  file: { paths: [\"DIR/*.conf\"] }\ndo:\n  - revert\n  - alert: { summary: \"{file.path} {file.change}\" }\n";

/// Waits until `path` holds `content` with mode 0644.
fn wait_restored(path: &Path, content: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let ok = fs::symlink_metadata(path)
            .is_ok_and(|m| m.is_file() && m.mode() & 0o7777 == 0o644)
            && fs::read_to_string(path).is_ok_and(|c| c == content);
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn changes_the_syscall_probes_cannot_see_are_reverted_and_alerted_once() {
    require_root();
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    let tool = programs::compile(
        &scratch.path("bin"),
        "file_attack",
        programs::FILE_ATTACK_PROGRAM,
    );
    let modes = ["uring", "hold", "mmap", "chmod", "truncate"];
    for mode in modes {
        let path = etc.join(format!("{mode}.conf"));
        fs::write(&path, format!("deployed content for {mode}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    }
    scratch.policy(
        "managed.yaml",
        &POLICY.replace("DIR", etc.to_str().expect("utf-8")),
    );
    let agent = scratch.start();

    for mode in modes {
        let path = etc.join(format!("{mode}.conf"));
        let content = format!("deployed content for {mode}\n");
        let mut child = ChildGuard::spawn(
            Command::new(&tool)
                .args([mode, path.to_str().unwrap(), "EVIL\n"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let pid = child.pid();
        let status = child.wait_for(WAIT).expect("the attack finishes");
        assert!(
            status.success(),
            "{mode}: the attack itself failed: {status:?}"
        );
        assert!(
            wait_restored(&path, &content),
            "{mode}: {} was left changed",
            path.display()
        );
        let line = agent
            .stdout_line(WAIT, |l| {
                serde_json::from_str::<Value>(l)
                    .is_ok_and(|v| v["event"]["file"]["path"] == path.to_str().unwrap())
            })
            .unwrap_or_else(|| panic!("{mode}: no alert"));
        let alert: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(alert["event"]["process"]["pid"], pid, "{mode}: {alert}");
        assert_eq!(
            alert["event"]["process"]["exe"],
            tool.to_str().unwrap(),
            "{mode}: the alert names the writer"
        );
        assert_eq!(alert["results"][0]["action"], "revert", "{mode}");
        assert_eq!(alert["results"][0]["ok"], true, "{mode}: {alert}");
    }
    // One alert per change: fanotify's view and the probes' are one event.
    std::thread::sleep(Duration::from_millis(600));
    let extra: Vec<String> = agent.stdout.try_iter().collect();
    assert!(extra.is_empty(), "unexpected extra alerts: {extra:#?}");
}
