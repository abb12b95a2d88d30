//! Nothing blocks the engine: a watched file whose filesystem hangs (a
//! FUSE daemon stopped mid-way) costs the agent that file only, and a
//! FIFO, socket or directory swapped in at a watched path is reported,
//! never opened. Every mount, file and process here is the test's own.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use nix::{mount::MntFlags, sys::signal::Signal};
use reflex_tests::{
    Agent, ChildGuard, Scratch, eventually, holds, metric, metrics_addr, programs, require_root,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn revert_policy(name: &str, paths: &[&Path]) -> String {
    let list: Vec<String> = paths
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!(
        "name: {name}\nmode: enforce\non:\n  file: {{ paths: [{}] }}\ndo:\n  - revert\n  - alert\n",
        list.join(", ")
    )
}

/// A mount the test made; unmounted (lazily) on drop, after its daemon
/// and whoever uses it are killed.
struct Mount {
    path: PathBuf,
    daemon: Option<ChildGuard>,
    users: Vec<ChildGuard>,
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A killed daemon fails every call still waiting on it.
        drop(self.daemon.take());
        self.users.clear();
        let _ = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

fn tmpfs(path: &Path) -> Mount {
    fs::create_dir_all(path).expect("mount point");
    nix::mount::mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=4m"),
    )
    .expect("mounting a tmpfs");
    Mount {
        path: path.to_owned(),
        daemon: None,
        users: Vec::new(),
    }
}

/// Whether a thread of `pid` waits for a FUSE daemon's answer.
fn in_fuse_call(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        fs::read_to_string(task.path().join("wchan"))
            .is_ok_and(|w| w.contains("fuse") || w == "request_wait_answer")
    })
}

fn state_of(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Alerts (JSON) on the agent's stdout about `path` until `found` holds
/// for one; every alert read on the way is kept in `seen`.
fn alert_where(
    agent: &Agent,
    seen: &mut Vec<Value>,
    path: &Path,
    found: impl Fn(&Value) -> bool,
) -> Value {
    let path = path.to_str().expect("utf-8");
    if let Some(v) = seen
        .iter()
        .find(|v| v["event"]["file"]["path"] == path && found(v))
    {
        return v.clone();
    }
    let line = agent
        .stdout_line(WAIT, |l| {
            let Ok(v) = serde_json::from_str::<Value>(l) else {
                return false;
            };
            let hit = v["event"]["file"]["path"] == path && found(&v);
            seen.push(v);
            hit
        })
        .unwrap_or_else(|| panic!("no such alert about {path} within {WAIT:?}; saw {seen:#?}"));
    serde_json::from_str(&line).expect("alert JSON")
}

/// Polls until `path` is a regular file holding `content` (never opening
/// anything else there: reading a FIFO would be the very open under test).
fn restored(path: &Path, content: &str) -> bool {
    eventually(WAIT, || {
        fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
            && fs::read_to_string(path).is_ok_and(|c| c == content)
    })
}

fn revert_result(alert: &Value) -> &Value {
    alert["results"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["action"] == "revert"))
        .unwrap_or_else(|| panic!("no revert result in {alert:#}"))
}

#[test]
fn a_hung_fuse_file_costs_the_agent_that_file_only() {
    require_root();
    let scratch = Scratch::new();
    let program = programs::compile(
        &scratch.path("bin"),
        "hung_fuse",
        programs::HUNG_FUSE_PROGRAM,
    );
    let fuse_dir = scratch.path("fuse");
    fs::create_dir(&fuse_dir).unwrap();
    let mut daemon = ChildGuard::spawn(
        Command::new(&program)
            .arg(&fuse_dir)
            .arg("good fuse\n")
            .stdout(Stdio::piped()),
    );
    let daemon_pid = daemon.pid();
    let mut ready = String::new();
    BufReader::new(daemon.take_stdout())
        .read_line(&mut ready)
        .unwrap();
    let mut fuse = Mount {
        path: fuse_dir.clone(),
        daemon: Some(daemon),
        users: Vec::new(),
    };
    assert_eq!(ready.trim(), "mounted", "the FUSE daemon mounted");
    let hung = fuse_dir.join("file");
    assert_eq!(fs::read_to_string(&hung).unwrap(), "good fuse\n");

    let _tmp = tmpfs(&scratch.path("tmp"));
    let app = scratch.path("tmp/app.conf");
    fs::write(&app, "good\n").unwrap();
    fs::set_permissions(&app, fs::Permissions::from_mode(0o644)).unwrap();
    scratch.policy("keep.yaml", &revert_policy("keep", &[&hung, &app]));
    // The default deadline (fs.timeout, 5 s): the same agent a user runs.
    let agent = scratch.start();

    // A write the daemon answers, then stops: from here every look at the
    // file hangs in the kernel, waiting for the daemon.
    fuse.users
        .push(ChildGuard::spawn(Command::new("sh").arg("-c").arg(
            format!(
                "exec 3>>'{}'; printf evil >&3; exec sleep 600",
                hung.display()
            ),
        )));
    assert!(
        eventually(WAIT, || state_of(daemon_pid) == Some('T')),
        "the FUSE daemon stopped itself after the write"
    );

    // The agent looks at the changed file and hangs in the kernel there.
    let agent_pid = agent.guard.pid();
    assert!(
        eventually(WAIT, || in_fuse_call(agent_pid)),
        "the agent looked at the hung file"
    );

    // While it hangs, every change to another file is reverted and alerted.
    let mut seen = Vec::new();
    for i in 0..5 {
        fs::write(&app, format!("tampered {i}\n")).unwrap();
        assert!(holds(&app, "good\n", WAIT), "change {i} was reverted");
        let alert = alert_where(&agent, &mut seen, &app, |v| {
            v["event"]["file"]["after"]["size"] == format!("tampered {i}\n").len()
        });
        assert_eq!(revert_result(&alert)["ok"], true, "{alert:#}");
    }

    // The hung file is reported, and its revert says it could not finish.
    let reported = alert_where(&agent, &mut seen, &hung, |_| true);
    assert!(
        reported["event"]["file"]["unverified"].is_string(),
        "the change is reported unverified: {reported:#}"
    );
    let result = revert_result(&reported);
    assert_eq!(result["ok"], false, "{reported:#}");
    assert!(
        result["detail"]
            .as_str()
            .unwrap()
            .contains("could not finish"),
        "{reported:#}"
    );
    assert_eq!(state_of(daemon_pid), Some('T'), "still hung throughout");
    let addr = metrics_addr(&agent);
    assert!(metric(addr, "reflex_fs_timeouts_total{op=\"settle\"}") >= 1.0);
    assert!(metric(addr, "reflex_fs_threads_stuck") >= 1.0);
    drop(agent);
    drop(fuse);
}

/// A blocking writer of the FIFO at `fifo`: it prints `opened` once
/// anyone opens the FIFO for reading.
fn fifo_writer(fifo: &Path) -> ChildGuard {
    let writer = ChildGuard::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(format!("exec 3>'{}'; echo opened", fifo.display()))
            .stdout(Stdio::piped()),
    );
    // Blocked in the FIFO's open: the FIFO may be moved now (later, the
    // shell's creating open would make a regular file instead).
    let wchan = format!("/proc/{}/wchan", writer.pid());
    assert!(
        eventually(WAIT, || fs::read_to_string(&wchan)
            .is_ok_and(|w| w == "wait_for_partner")),
        "the FIFO's writer waits for a reader"
    );
    writer
}

#[test]
fn odd_files_at_a_watched_path_are_reported_never_opened() {
    require_root();
    let scratch = Scratch::new();
    let _tmp = tmpfs(&scratch.path("tmp"));
    let dir = scratch.path("tmp");
    let names = ["fifo.conf", "socket.conf", "dir.conf"];
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    for path in &paths {
        fs::write(path, "good\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    scratch.policy("keep.yaml", &revert_policy("keep", &refs));
    let agent = scratch.start();
    let mut seen = Vec::new();

    // A FIFO renamed over the file, with a writer waiting for a reader.
    let staged = dir.join("staged-fifo");
    nix::unistd::mkfifo(&staged, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let mut writer = fifo_writer(&staged);
    fs::rename(&staged, &paths[0]).unwrap();
    let alert = alert_where(&agent, &mut seen, &paths[0], |_| true);
    assert_eq!(alert["event"]["file"]["found"], "fifo", "{alert:#}");
    assert!(restored(&paths[0], "good\n"), "the file is back");
    // The FIFO is gone from every path: nobody can open it any more. Its
    // writer is still waiting, so no one ever opened it for reading.
    let waiting = state_of(writer.pid()).is_some_and(|s| s != 'Z');
    writer.signal(Signal::SIGKILL);
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut writer.take_stdout(), &mut out);
    assert!(!out.contains("opened"), "the agent opened the FIFO");
    assert!(waiting, "the FIFO's writer still waits for a reader");

    // A socket bound at the path.
    let staged = dir.join("staged-socket");
    let socket = std::os::unix::net::UnixListener::bind(&staged).unwrap();
    fs::rename(&staged, &paths[1]).unwrap();
    let alert = alert_where(&agent, &mut seen, &paths[1], |v| {
        v["event"]["file"]["found"] == "socket"
    });
    assert!(restored(&paths[1], "good\n"), "{alert:#}");
    drop(socket);

    // A directory: it cannot be renamed over, so the revert fails and says
    // so; the agent goes on.
    // (The agent may put the file back between the two calls: again.)
    assert!(
        eventually(WAIT, || {
            let _ = fs::remove_file(&paths[2]);
            fs::create_dir(&paths[2]).is_ok()
        }),
        "a directory took the path"
    );
    let alert = alert_where(&agent, &mut seen, &paths[2], |v| {
        v["event"]["file"]["found"] == "directory"
    });
    assert_eq!(revert_result(&alert)["ok"], false, "{alert:#}");
    fs::write(&paths[0], "tampered\n").unwrap();
    assert!(restored(&paths[0], "good\n"), "the agent keeps answering");
    fs::remove_dir(&paths[2]).unwrap();
    drop(agent);
}
