//! Helpers shared by the root integration tests: guards that clean up what a
//! test started even when it fails, and bounded waits.
use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use reflex::events::Record;
use tokio::sync::mpsc::Receiver;

/// Fails the test early, with a clear reason, when not running as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests load eBPF programs and must run as root (cargo xtask test)"
    );
}

/// Path of the `reflex` binary under test (set by `cargo xtask test`).
pub fn reflex_bin() -> PathBuf {
    std::env::var_os("REFLEX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/reflex"))
}

/// A child process this test started; killed by pid on drop unless reaped.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns `command` and guards it.
    pub fn spawn(command: &mut Command) -> Self {
        let child = command.spawn().expect("spawning a test child");
        Self { child: Some(child) }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child present").id()
    }

    /// Takes the child's stdout.
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("stdout piped")
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signalling our child");
    }

    /// Waits up to `limit` for the child to exit; returns its status, or
    /// `None` if it is still running.
    pub fn wait_for(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for our child") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `reflex ARGS` with piped stdout and stderr, and waits (bounded)
/// until its log says `ready`. Returns the guard and its stdout lines.
pub fn start_reflex(args: &[&str], ready: &str) -> (ChildGuard, mpsc::Receiver<String>) {
    let mut guard = ChildGuard::spawn(
        Command::new(reflex_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stderr = guard
        .child
        .as_mut()
        .and_then(|c| c.stderr.take())
        .expect("stderr piped");
    let (ready_tx, ready_rx) = mpsc::channel();
    let marker = ready.to_string();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[reflex] {line}");
            if line.contains(&marker) {
                let _ = ready_tx.send(());
            }
        }
    });
    let stdout = guard.take_stdout();
    let (line_tx, line_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("reflex {args:?} did not log {ready:?} within 30 s"));
    (guard, line_rx)
}

/// Receives records until `found` returns true for one, or `limit` passes.
pub async fn wait_for_record(
    records: &mut Receiver<Record>,
    limit: Duration,
    mut found: impl FnMut(&Record) -> bool,
) -> Option<Record> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, records.recv()).await {
            Ok(Some(record)) if found(&record) => return Some(record),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}
