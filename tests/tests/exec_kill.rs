//! Exec kill in the kernel: an enforcing exec `kill` policy kills the
//! program at `sched_process_exec`, before its first instruction, whatever
//! name it was started by. The programs are compiled here; each leaves a
//! marker as its first act (and forks a child that leaves another), so a
//! missing marker proves it never ran. Every file, process and directory
//! here is the test's own.
use std::{
    fs,
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use reflex_tests::{
    Agent, ChildGuard, Scratch, http_get, metric, metrics_addr,
    programs::{MARKER_PROGRAM, SPAWN_PROGRAM, compile},
    reflex_bin, require_root, start_agent_with,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

/// A scratch area with the marker program as `bin/ncx` and the spawner.
struct Fixture {
    scratch: Scratch,
    /// `SCRATCH/bin`, resolved: what the kernel reports.
    bin: PathBuf,
    marker: PathBuf,
    spawn: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let scratch = Scratch::new();
        let tools = scratch.path("tools");
        fs::create_dir(&tools).expect("tools dir");
        fs::create_dir(scratch.path("other")).expect("other dir");
        let marker = compile(&tools, "marker", MARKER_PROGRAM);
        let spawn = compile(&tools, "spawn", SPAWN_PROGRAM);
        let bin = fs::canonicalize(scratch.path("bin")).expect("bin dir");
        let fixture = Self {
            scratch,
            bin,
            marker,
            spawn,
        };
        fixture.copy_marker("bin/ncx");
        fixture
    }

    fn ncx(&self) -> PathBuf {
        self.bin.join("ncx")
    }

    /// A copy of the marker program at `rel` (a new file: its own identity).
    fn copy_marker(&self, rel: &str) -> PathBuf {
        let path = self.scratch.path(rel);
        fs::copy(&self.marker, &path).expect("copy the marker program");
        path
    }

    /// One exec policy on `paths` that kills and alerts.
    fn policy(&self, mode: &str, paths: &str) {
        self.scratch.policy(
            "exec-kill.yaml",
            &format!(
                "name: no-ncx\nmode: {mode}\non:\n  exec: {{ paths: [\"{paths}\"] }}\ndo:\n  - kill\n  - alert: {{ severity: critical }}\n"
            ),
        );
    }

    /// Starts `command` with markers named after `tag`.
    fn run(&self, command: &mut Command, tag: &str) -> Run {
        let marker = self.scratch.path(&format!("{tag}.marker"));
        let child_marker = self.scratch.path(&format!("{tag}.child-marker"));
        let child = ChildGuard::spawn(
            command
                .env("MARKER", &marker)
                .env("CHILD_MARKER", &child_marker)
                .env("LINGER", "10")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        Run {
            child,
            marker,
            child_marker,
            tag: tag.to_string(),
        }
    }
}

/// A started program and the markers it would leave.
struct Run {
    child: ChildGuard,
    marker: PathBuf,
    child_marker: PathBuf,
    tag: String,
}

impl Run {
    /// Asserts that the program was killed by SIGKILL and never ran: no
    /// marker, no forked child. Returns its pid.
    fn killed_before_running(mut self) -> u32 {
        let pid = self.child.pid();
        let status = self
            .child
            .wait_for(WAIT)
            .unwrap_or_else(|| panic!("{}: still running", self.tag));
        assert_eq!(status.signal(), Some(9), "{}: killed by SIGKILL", self.tag);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !self.marker.exists(),
            "{}: its first instruction ran (marker)",
            self.tag
        );
        assert!(
            !self.child_marker.exists(),
            "{}: it forked first (child marker)",
            self.tag
        );
        pid
    }

    /// Asserts that the program ran (its marker appears) and is still alive.
    fn ran(mut self) -> u32 {
        let pid = self.child.pid();
        wait_until(&format!("{}: marker", self.tag), || self.marker.exists());
        assert!(
            self.child.wait_for(Duration::from_millis(200)).is_none(),
            "{}: ran, then was killed",
            self.tag
        );
        pid
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The alert on the agent's stdout about process `pid`.
fn alert_for(agent: &Agent, pid: u32) -> Value {
    let line = agent
        .stdout_line(WAIT, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"]["process"]["pid"] == pid)
        })
        .unwrap_or_else(|| panic!("no alert for pid {pid} within {WAIT:?}"));
    serde_json::from_str(&line).expect("alert is JSON")
}

fn assert_killed_in_kernel(alert: &Value, what: &str) {
    assert_eq!(alert["policy"], "no-ncx", "{what}");
    assert_eq!(alert["event"]["exec"]["killed"], true, "{what}: {alert}");
    let detail = alert["results"][0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("in the kernel at exec"), "{what}: {detail}");
}

/// `reflex_exec_kill_entries` as the agent serves it.
fn armed(agent: &Agent) -> i64 {
    http_get(metrics_addr(agent), "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("reflex_exec_kill_entries "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

#[test]
fn the_program_is_killed_before_its_first_instruction_and_others_run() {
    require_root();
    let f = Fixture::new();
    f.policy("enforce", &format!("{}/nc*", f.bin.display()));
    let agent = f.scratch.start();

    let pid = f
        .run(&mut Command::new(f.ncx()), "direct")
        .killed_before_running();
    let alert = alert_for(&agent, pid);
    assert_killed_in_kernel(&alert, "direct");
    assert_eq!(alert["mode"], "enforce");
    assert_eq!(alert["event"]["process"]["exe"], f.ncx().to_str().unwrap());

    let free = f.copy_marker("bin/free-tool");
    f.run(&mut Command::new(&free), "free").ran();
}

#[test]
fn every_spelling_of_the_file_is_killed() {
    require_root();
    let f = Fixture::new();
    f.policy("enforce", &format!("{}/nc*", f.bin.display()));
    let other = f.scratch.path("other");
    let link = other.join("innocent");
    std::os::unix::fs::symlink(f.ncx(), &link).expect("symlink");
    let hard = other.join("hard");
    fs::hard_link(f.ncx(), &hard).expect("hardlink");
    let script = other.join("job");
    fs::write(&script, format!("#!{}\n", f.ncx().display())).expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod script");
    let agent = f.scratch.start();

    let double_slash = format!("{}//ncx", f.bin.display());
    let dot_dot = format!("{}/../bin/ncx", f.bin.display());
    let through_root = format!("/proc/self/root{}", f.ncx().display());
    let bound = other.join("bound");
    fs::write(&bound, b"").expect("bind mount point");
    let mut spellings: Vec<(&str, Command)> = vec![
        ("double slash", Command::new(&double_slash)),
        ("dot dot", Command::new(&dot_dot)),
        ("proc root", Command::new(&through_root)),
        ("./ncx", {
            let mut c = Command::new("./ncx");
            c.current_dir(&f.bin);
            c
        }),
        ("symlink", Command::new(&link)),
        ("hardlink", Command::new(&hard)),
        ("script", Command::new(&script)),
    ];
    for mode in ["fexecve", "execveat", "devfd", "dirfd"] {
        let mut c = Command::new(&f.spawn);
        c.arg(mode).arg(f.ncx());
        spellings.push((mode, c));
    }
    // A bind mount in a mount namespace of its own, gone with it.
    let mut bind = Command::new("unshare");
    bind.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind {} {} && exec {}",
            f.ncx().display(),
            bound.display(),
            bound.display()
        ));
    spellings.push(("bind mount", bind));
    for (what, mut command) in spellings {
        let pid = f
            .run(&mut command, &what.replace(['/', ' ', '.'], "-"))
            .killed_before_running();
        let alert = alert_for(&agent, pid);
        assert_killed_in_kernel(&alert, what);
        if what == "hardlink" || what == "bind mount" {
            let name = if what == "hardlink" { &hard } else { &bound };
            assert_eq!(alert["event"]["process"]["exe"], name.to_str().unwrap());
            assert_eq!(
                alert["event"]["exec"]["aliases"],
                serde_json::json!([f.ncx()]),
                "matched as the same file"
            );
        } else {
            assert_eq!(
                alert["event"]["process"]["exe"],
                f.ncx().to_str().unwrap(),
                "{what}: the loaded executable, resolved"
            );
        }
    }
}

/// What an exact path covers, and the limits `policies/README.md` lists:
/// a copy is another file, and the dynamic loader is what the kernel
/// loads when it is run with the binary as its argument.
#[test]
fn an_exact_path_covers_the_file_not_a_copy_of_it() {
    require_root();
    let f = Fixture::new();
    f.policy("enforce", f.ncx().to_str().unwrap());
    let hard = f.scratch.path("other/hard");
    fs::hard_link(f.ncx(), &hard).expect("hardlink");
    let copy = f.copy_marker("other/copy");
    let agent = f.scratch.start();

    f.run(&mut Command::new(&hard), "hardlink")
        .killed_before_running();
    let pid = f.run(&mut Command::new(&copy), "copy").ran();
    let mut loader = Command::new("/lib64/ld-linux-x86-64.so.2");
    loader.arg(f.ncx());
    f.run(&mut loader, "loader").ran();
    assert!(
        agent
            .stdout_line(Duration::from_millis(300), |l| l
                .contains(&format!("\"pid\":{pid},")))
            .is_none(),
        "the copy matches no policy"
    );
}

/// A file renamed into place and run in the same breath beats the agent to
/// it: its identity is new. The kernel still kills it, by its name in a
/// directory a `start*` glob or a literal path covers.
#[test]
fn a_file_renamed_into_place_and_run_at_once_is_killed_by_its_name() {
    require_root();
    let f = Fixture::new();
    f.policy("enforce", &format!("{}/nc*", f.bin.display()));
    let agent = f.scratch.start();

    // Written under a name no policy covers, in a directory no policy
    // names, so only the rename tells the agent of it.
    let staged = f.copy_marker("other/staged");
    let racer = f.bin.join("nc-race");
    let mut command = Command::new(&f.spawn);
    command.arg("rename").arg(&staged).arg(&racer);
    let pid = f.run(&mut command, "race").killed_before_running();
    assert_killed_in_kernel(&alert_for(&agent, pid), "renamed in");
}

#[test]
fn monitor_mode_kills_nothing() {
    require_root();
    let f = Fixture::new();
    f.policy("monitor", &format!("{}/nc*", f.bin.display()));
    let agent = f.scratch.start();

    let pid = f.run(&mut Command::new(f.ncx()), "monitored").ran();
    let alert = alert_for(&agent, pid);
    assert_eq!(alert["mode"], "monitor");
    assert_eq!(alert["would"], serde_json::json!(["kill"]));
    assert_eq!(alert["event"]["exec"]["killed"], false);
}

#[test]
fn the_agents_hooks_are_never_killed_in_the_kernel() {
    require_root();
    let f = Fixture::new();
    f.policy("enforce", &format!("{}/nc*", f.bin.display()));
    let trigger = f.scratch.tool("upload-done", "/bin/true");
    let marker = f.scratch.path("hook.marker");
    let hook = f.scratch.script(
        "hook",
        &format!("MARKER={} {}", marker.display(), f.ncx().display()),
    );
    f.scratch.policy(
        "hook.yaml",
        &format!(
            "name: hook\nmode: enforce\non:\n  exec: {{ paths: [\"{}\"] }}\ndo:\n  - run: {{ command: [\"{}\"] }}\n",
            trigger.display(),
            hook.display()
        ),
    );
    let _agent = f.scratch.start();

    let mut child = ChildGuard::spawn(&mut Command::new(&trigger));
    child.wait_for(WAIT).expect("the trigger exits");
    wait_until("the hook's ncx ran", || marker.exists());
}

#[test]
fn the_fuse_stops_in_kernel_kills_until_reload() {
    require_root();
    let f = Fixture::new();
    f.policy("enforce", &format!("{}/nc*", f.bin.display()));
    let (a, b, c) = (
        f.copy_marker("bin/nc-a"),
        f.copy_marker("bin/nc-b"),
        f.copy_marker("bin/nc-c"),
    );
    let mut command = f.scratch.run_command(&reflex_bin());
    command.args(["--kill-fuse", "1"]);
    let agent = start_agent_with(&mut command, "reflex running");
    assert_eq!(armed(&agent), 4, "ncx, nc-a, nc-b and nc-c are armed");

    f.run(&mut Command::new(&a), "a1").killed_before_running();
    let pid = f.run(&mut Command::new(&b), "b1").killed_before_running();
    let alert = alert_for(&agent, pid);
    assert_eq!(
        alert["mode"], "enforce",
        "the fuse switches kills off, not the policy"
    );
    assert_eq!(
        alert["would"],
        serde_json::json!(["kill"]),
        "the second file blew the fuse"
    );
    let note = alert["note"].as_str().unwrap_or_default();
    assert!(note.contains("kill fuse blown"), "{note}");
    assert!(note.contains("already killed"), "{note}");
    assert_eq!(
        metric(
            metrics_addr(&agent),
            "reflex_kill_fuse_blown_total{policy=\"no-ncx\"}"
        ),
        1.0,
        "the blown fuse is counted (ReflexKillFuseBlown alerts on it)"
    );
    agent
        .log_line(WAIT, "kernel no longer kills at exec")
        .expect("the kernel is told");

    f.run(&mut Command::new(&c), "c1").ran();
    f.run(&mut Command::new(&a), "a2").ran();
    assert_eq!(armed(&agent), 0);

    agent.guard.signal(Signal::SIGHUP);
    agent
        .log_line(WAIT, "policies reloaded")
        .expect("SIGHUP reloads");
    wait_until("re-armed after the reload", || armed(&agent) == 4);
    f.run(&mut Command::new(&c), "c2").killed_before_running();
}

#[test]
fn a_file_that_appears_is_killed_in_the_kernel() {
    require_root();
    let f = Fixture::new();
    f.policy("enforce", &format!("{}/nc*", f.bin.display()));
    let agent = f.scratch.start();
    assert_eq!(armed(&agent), 1);

    let late = f.copy_marker("bin/nc-late");
    wait_until("the new file is armed", || armed(&agent) == 2);
    f.run(&mut Command::new(&late), "late")
        .killed_before_running();

    // Removed, then replaced by a rename: the new file at that path (a new
    // inode) is armed in its turn.
    fs::remove_file(&late).expect("remove");
    wait_until("the removed file is disarmed", || armed(&agent) == 1);
    let fresh = f.copy_marker("other/fresh");
    fs::rename(&fresh, &late).expect("rename into place");
    wait_until("the renamed file is armed", || armed(&agent) == 2);
    f.run(&mut Command::new(&late), "replaced")
        .killed_before_running();
}
