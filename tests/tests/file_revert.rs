//! The file sensor and revert end to end (seed case S1, and S4 uploads):
//! real writes by real programs to files this test created, put back by the
//! real agent. Every file, directory and process here is the test's own.
use std::{
    fs,
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        process::ExitStatusExt as _,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use reflex_tests::{Agent, ChildGuard, Scratch, require_root};
use serde_json::Value;

/// A restore must land within this (the bound; the benchmark
/// measures the real latency).
const RESTORED_WITHIN: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(5);

fn revert_policy(name: &str, mode: &str, glob: &str, extra: &str) -> String {
    format!(
        "name: {name}\nmode: {mode}\non:\n  file: {{ paths: [\"{glob}\"] }}\ndo:\n{extra}  - revert\n  - alert: {{ summary: \"{{file.path}} {{file.change}} by {{process.exe}}\" }}\n"
    )
}

/// Writes a root-owned 0644 file.
fn make_file(path: &Path, content: &str) {
    fs::write(path, content).expect("write file");
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// Waits until `path` holds `content` with mode 0644 and owner root.
fn wait_restored(path: &Path, content: &str) -> bool {
    let deadline = Instant::now() + RESTORED_WITHIN;
    loop {
        let ok = fs::symlink_metadata(path).is_ok_and(|m| {
            m.is_file() && m.mode() & 0o7777 == 0o644 && m.uid() == 0 && m.gid() == 0
        }) && fs::read_to_string(path).is_ok_and(|c| c == content);
        if ok {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `command` to completion and returns its pid.
fn run(command: &mut Command) -> u32 {
    let mut child = ChildGuard::spawn(command.stdout(Stdio::null()).stderr(Stdio::null()));
    let pid = child.pid();
    child.wait_for(WAIT).expect("the command finishes");
    pid
}

/// The alert about `path` caused by process `pid`.
fn alert_about(agent: &Agent, path: &Path, pid: u32) -> Value {
    let path = path.to_str().expect("utf-8").to_string();
    let line = agent
        .stdout_line(WAIT, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["event"]["file"]["path"] == path.as_str() && v["event"]["process"]["pid"] == pid
            })
        })
        .unwrap_or_else(|| panic!("no alert about {path} by pid {pid}"));
    serde_json::from_str(&line).expect("alert JSON")
}

struct Case {
    name: &'static str,
    /// Builds the command that changes `file` (scratch root given).
    command: fn(&Path, &Path) -> Command,
    /// Name of the executable the alert must name.
    exe: &'static str,
}

/// The file the cases' `program` names (they run system tools), every
/// symlink resolved.
fn resolved(program: &str) -> Option<std::path::PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
        .and_then(|p| fs::canonicalize(p).ok())
}

fn sh(script: String) -> Command {
    let mut c = Command::new("/bin/sh");
    c.args(["-c", &script]);
    c
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8").to_string()
}

const CASES: &[Case] = &[
    Case {
        name: "append",
        command: |f, _| sh(format!("echo x >> {}", s(f))),
        exe: "sh",
    },
    Case {
        name: "overwrite",
        command: |f, _| sh(format!("echo x > {}", s(f))),
        exe: "sh",
    },
    Case {
        name: "sed-in-place",
        command: |f, _| cmd("/usr/bin/sed", &["-i", "s/original/changed/", &s(f)]),
        exe: "sed",
    },
    Case {
        name: "cp-over",
        command: |f, root| cmd("/usr/bin/cp", &[&s(&root.join("other")), &s(f)]),
        exe: "cp",
    },
    Case {
        name: "mv-over",
        command: |f, root| cmd("/usr/bin/mv", &[&s(&root.join("other-mv")), &s(f)]),
        exe: "mv",
    },
    Case {
        name: "rm",
        command: |f, _| cmd("/usr/bin/rm", &[&s(f)]),
        exe: "rm",
    },
    Case {
        name: "chmod",
        command: |f, _| cmd("/usr/bin/chmod", &["777", &s(f)]),
        exe: "chmod",
    },
    Case {
        name: "chown",
        command: |f, _| cmd("/usr/bin/chown", &["nobody", &s(f)]),
        exe: "chown",
    },
    Case {
        name: "write-in-place",
        command: |f, _| {
            cmd(
                "/usr/bin/python3",
                &[
                    "-c",
                    &format!("f = open({:?}, 'r+'); f.write('X'); f.close()", s(f)),
                ],
            )
        },
        exe: "python3",
    },
    Case {
        name: "hardlink",
        command: |f, root| {
            sh(format!(
                "echo x >> {}",
                s(&root.join("links").join(f.file_name().unwrap()))
            ))
        },
        exe: "sh",
    },
    Case {
        name: "symlink",
        command: |f, root| {
            sh(format!(
                "echo x >> {}.sym",
                s(&root.join("links").join(f.file_name().unwrap()))
            ))
        },
        exe: "sh",
    },
    Case {
        name: "relative",
        command: |f, root| {
            let mut c = sh(format!(
                "echo x >> ../etc/{}",
                f.file_name().unwrap().to_str().unwrap()
            ));
            c.current_dir(root.join("links"));
            c
        },
        exe: "sh",
    },
];

#[test]
fn every_kind_of_change_is_reverted_and_alerted_once() {
    require_root();
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    let links = scratch.path("links");
    fs::create_dir(&etc).unwrap();
    fs::create_dir(&links).unwrap();
    make_file(&scratch.path("other"), "other content\n");
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let path = etc.join(format!("{:02}-{}.conf", i, case.name));
        let content = format!("original {}\n", case.name);
        make_file(&path, &content);
        files.push((path, content));
    }
    // Names to change the files by, made before the agent starts.
    let hard = &files[9].0;
    fs::hard_link(hard, links.join(hard.file_name().unwrap())).unwrap();
    let soft = &files[10].0;
    std::os::unix::fs::symlink(
        soft,
        links.join(format!(
            "{}.sym",
            soft.file_name().unwrap().to_str().unwrap()
        )),
    )
    .unwrap();
    scratch.policy(
        "files.yaml",
        &revert_policy("etc-files", "enforce", &format!("{}/*.conf", s(&etc)), ""),
    );
    let agent = scratch.start();

    for (case, (path, content)) in CASES.iter().zip(&files) {
        make_file(&scratch.path("other-mv"), "moved content\n");
        let started = Instant::now();
        let pid = run(&mut (case.command)(path, scratch.path("").as_path()));
        assert!(
            wait_restored(path, content),
            "{}: not restored within {RESTORED_WITHIN:?} ({:?} after the command started)",
            case.name,
            started.elapsed()
        );
        let alert = alert_about(&agent, path, pid);
        let exe = alert["event"]["process"]["exe"]
            .as_str()
            .unwrap_or_default();
        // `process.exe` is the file the kernel loaded: `sh` may be `dash`,
        // `python3` a versioned name behind a symlink.
        assert!(
            Path::new(exe).file_name().is_some_and(|n| n == case.exe)
                || exe.ends_with(&format!("/{}", case.exe))
                || resolved(case.exe).is_some_and(|r| r == Path::new(exe)),
            "{}: alert names exe {exe:?}",
            case.name
        );
        assert_eq!(alert["results"][0]["action"], "revert", "{}", case.name);
        assert_eq!(
            alert["results"][0]["ok"], true,
            "{}: {}",
            case.name, alert["results"][0]
        );
    }
    // One alert per change: nothing else arrives about these files.
    std::thread::sleep(Duration::from_millis(600));
    let extra: Vec<String> = agent.stdout.try_iter().collect();
    assert!(extra.is_empty(), "unexpected extra alerts: {extra:#?}");
}

#[test]
fn monitor_mode_leaves_the_change_and_says_it_would_revert() {
    require_root();
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    let file = etc.join("app.conf");
    make_file(&file, "original\n");
    scratch.policy(
        "files.yaml",
        &revert_policy("watch-app", "monitor", &s(&file), ""),
    );
    let agent = scratch.start();

    let pid = run(&mut sh(format!("echo changed > {}", s(&file))));
    let alert = alert_about(&agent, &file, pid);
    assert_eq!(alert["would"], serde_json::json!(["revert"]));
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "changed\n",
        "monitor changed nothing"
    );
}

#[test]
fn a_kill_policy_kills_the_writer_in_the_syscall_and_the_content_stays() {
    require_root();
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    let file = etc.join("guarded.conf");
    make_file(&file, "guarded\n");
    scratch.policy(
        "files.yaml",
        &revert_policy("guard", "enforce", &s(&file), "  - kill\n"),
    );
    let agent = scratch.start();

    // Opens for writing with truncation, then writes: the kill lands in the
    // open, so the write never happens; the revert undoes the truncation.
    let script = format!(
        "import os\nfd = os.open({:?}, os.O_WRONLY | os.O_TRUNC)\nos.write(fd, b'EVIL')\n",
        s(&file)
    );
    let mut child = ChildGuard::spawn(Command::new("/usr/bin/python3").args(["-c", &script]));
    let pid = child.pid();
    let status = child.wait_for(WAIT).expect("the writer ends");
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    assert!(wait_restored(&file, "guarded\n"), "content intact");
    let alert = alert_about(&agent, &file, pid);
    assert_eq!(alert["event"]["file"]["killed"], true);
    assert_eq!(alert["results"][0]["action"], "kill");
}

#[test]
fn drift_while_the_agent_was_stopped_is_reverted_at_start() {
    require_root();
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    let file = etc.join("drift.conf");
    make_file(&file, "baseline\n");
    scratch.policy(
        "files.yaml",
        &revert_policy("drift", "enforce", &s(&file), ""),
    );
    let mut first = scratch.start();
    first.guard.signal(Signal::SIGTERM);
    assert!(first.guard.wait_for(WAIT).is_some_and(|s| s.success()));

    make_file(&file, "changed while nobody watched\n");
    let second = scratch.start();
    assert!(
        wait_restored(&file, "baseline\n"),
        "drift reverted at start-up"
    );
    let line = second
        .stdout_line(WAIT, |l| l.contains("\"drift\""))
        .expect("a drift alert");
    let alert: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(alert["event"]["file"]["change"], "drift");
}

#[test]
fn uploads_run_the_hook_once_each_when_complete() {
    require_root();
    let scratch = Scratch::new();
    let uploads = scratch.path("uploads");
    fs::create_dir(&uploads).unwrap();
    let log = scratch.path("hook.log");
    let hook = scratch.script(
        "on-upload",
        &format!(
            "read -r event; echo \"$1 $(wc -c < \"$1\")\" >> {}",
            s(&log)
        ),
    );
    scratch.policy(
        "uploads.yaml",
        &format!(
            "name: uploads\nmode: enforce\non:\n  file: {{ paths: [\"{}/*.jpg\"], events: [close_write] }}\ndo:\n  - run: {{ command: [\"{}\", \"{{file.path}}\"] }}\n",
            s(&uploads),
            s(&hook)
        ),
    );
    let _agent = scratch.start();

    // Each upload is written in several pieces; the hook must see it whole.
    for name in ["a.jpg", "b.jpg", "c.jpg"] {
        let script = format!(
            "import time\nf = open({:?}, 'wb')\nfor _ in range(4):\n    f.write(b'x' * 1000); f.flush(); time.sleep(0.02)\nf.close()\n",
            s(&uploads.join(name))
        );
        run(Command::new("/usr/bin/python3").args(["-c", &script]));
    }
    run(&mut sh(format!(
        "echo not an image > {}",
        s(&uploads.join("notes.txt"))
    )));

    let read_log = || -> Vec<String> {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    while read_log().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Any duplicate hook would land shortly after the first three.
    std::thread::sleep(Duration::from_millis(300));
    let mut lines = read_log();
    lines.sort();
    let expected: Vec<String> = ["a.jpg", "b.jpg", "c.jpg"]
        .iter()
        .map(|n| format!("{} 4000", s(&uploads.join(n))))
        .collect();
    assert_eq!(
        lines, expected,
        "one hook per complete upload, none for notes.txt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_unwatched_files_never_reach_userspace() {
    use std::collections::HashSet;

    use reflex::{
        events::{Body, Kind},
        policy,
        sensor::{Sensor, SensorOptions},
        settle::file::watch::WatchList,
        telemetry::Metrics,
    };
    require_root();
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    let other = scratch.path("other");
    fs::create_dir(&etc).unwrap();
    fs::create_dir(&other).unwrap();
    let watched = etc.join("watched.conf");
    make_file(&watched, "watched\n");
    scratch.policy(
        "files.yaml",
        &revert_policy("w", "monitor", &s(&watched), ""),
    );
    let set = policy::load_set(&[scratch.path("policies")]).expect("valid policies");

    let metrics = Metrics::new();
    let options = SensorOptions {
        kinds: Some(HashSet::from([Kind::File])),
        exclude_self: false,
        ..SensorOptions::default()
    };
    let (mut sensor, mut records) = Sensor::start(options, metrics.clone()).expect("sensor");
    let mut watch = WatchList::new(Some(sensor.take_watch_maps().expect("watch maps")));
    watch.configure(&set);

    for i in 0..1000 {
        fs::write(other.join(format!("u{}.txt", i % 10)), format!("{i}\n")).unwrap();
    }
    let file_events = || metrics.events.with_label_values(&["file", "file"]).get();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        file_events(),
        0,
        "writes to unwatched files reached userspace"
    );
    assert!(records.try_next().is_none());

    fs::write(&watched, "changed\n").unwrap();
    let ino = fs::metadata(&watched).unwrap().ino();
    let record = tokio::time::timeout(WAIT, records.next())
        .await
        .expect("the watched write is reported")
        .expect("open channel");
    let Body::File(file) = &record.body else {
        panic!("not a file event: {record:?}")
    };
    assert_eq!(file.ino, ino);
    assert!(file_events() >= 1, "the counter counts file events");
}
