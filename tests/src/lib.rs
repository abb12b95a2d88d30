//! Helpers shared by the root integration tests: guards that clean up what a
//! test started even when it fails, and bounded waits. Starting the agent,
//! guarding processes and reading `/metrics` come from `reflex-harness`
//! (shared with the benchmarks); here a failure fails the test.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, ExitStatus},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use reflex::events::Record;
pub use reflex_harness::Metrics;
use reflex_harness::{Launch, run_args};

pub mod cgroups;
pub mod nats;
pub mod programs;
pub mod prometheus;
pub mod skip;
pub mod sockets;
pub mod users;

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
/// [`reflex_harness::ChildGuard`] with a failure failing the test.
#[derive(Debug)]
pub struct ChildGuard(reflex_harness::ChildGuard);

impl ChildGuard {
    /// Spawns `command` and guards it.
    pub fn spawn(command: &mut Command) -> Self {
        Self(reflex_harness::ChildGuard::spawn(command).expect("spawning a test child"))
    }

    /// Guards a child spawned elsewhere.
    pub fn adopt(child: Child) -> Self {
        Self(reflex_harness::ChildGuard::adopt(child))
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Takes the child's stdout.
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.0.take_stdout().expect("stdout piped")
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) {
        self.0.signal(signal).expect("signalling our child");
    }

    /// Waits up to `limit` for the child to exit; returns its status, or
    /// `None` if it is still running.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.0.wait_for(limit).expect("waiting for our child")
    }
}

/// A running `reflex` child with its output as lines (`guard`, `stdout`,
/// `stderr`, `log`; `stdout_line` and `log_line` wait for a line).
pub type Agent = reflex_harness::Agent<ChildGuard>;

/// The first alert `agent` prints on stdout within `limit` whose policy is
/// `policy` and for which `found` holds; panics when none comes.
pub fn policy_alert(
    agent: &Agent,
    limit: Duration,
    policy: &str,
    found: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let line = agent
        .stdout_line(limit, |l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["policy"] == policy && found(&v))
        })
        .unwrap_or_else(|| panic!("no alert from {policy}"));
    serde_json::from_str(&line).expect("alert JSON")
}

/// Starts `reflex ARGS` with piped stdout and stderr, and waits (bounded)
/// until its log says `ready`.
pub fn start_agent(args: &[&str], ready: &str) -> Agent {
    start_agent_with(Command::new(reflex_bin()).args(args), ready)
}

/// Like [`start_agent`] for a prepared command (a wrapper such as `setpriv`,
/// extra environment); stdin, stdout and stderr are set here. The agent's
/// log is echoed on the test's stderr.
pub fn start_agent_with(command: &mut Command, ready: &str) -> Agent {
    Launch::new(ready)
        .echo("[reflex] ")
        .start(command.env("RUST_LOG", "info").env("NO_COLOR", "1"))
        .unwrap_or_else(|e| panic!("{e}"))
        .map_guard(ChildGuard)
}

/// Starts `reflex ARGS` and waits for `ready`; returns the guard and stdout lines.
pub fn start_reflex(args: &[&str], ready: &str) -> (ChildGuard, mpsc::Receiver<String>) {
    let agent = start_agent(args, ready);
    (agent.guard, agent.stdout)
}

/// A scratch area: tools to run, a policy directory, a state directory.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh scratch directory with `bin/` and `policies/`.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("reflex-policy-test")
            .tempdir()
            .expect("temp dir");
        fs::create_dir(dir.path().join("bin")).expect("bin dir");
        fs::create_dir(dir.path().join("policies")).expect("policy dir");
        Self { dir }
    }

    /// A path inside the scratch directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Copies `from` to `bin/NAME` and returns its path.
    pub fn tool(&self, name: &str, from: &str) -> PathBuf {
        let path = self.path(&format!("bin/{name}"));
        fs::copy(from, &path).expect("copy tool");
        path
    }

    /// Writes an executable script `bin/NAME`.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(&format!("bin/{name}"));
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
        path
    }

    /// Writes `policies/FILE` with owner-only write permission.
    pub fn policy(&self, file: &str, text: &str) {
        let path = self.path(&format!("policies/{file}"));
        fs::write(&path, text).expect("write policy");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod policy");
    }

    /// `PROGRAM run` on the scratch policies and state directory, metrics
    /// on a free loopback port: a command to wrap or extend.
    pub fn run_command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        run_args(&mut command, &self.path("policies"), &self.path("state"));
        command
    }

    /// [`Scratch::run_command`] with metrics on `metrics_addr`, a port the
    /// test chose.
    pub fn run_command_on(&self, program: &Path, metrics_addr: &str) -> Command {
        let mut command = Command::new(program);
        command
            .arg("run")
            .arg("--policies")
            .arg(self.path("policies"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .args(["--metrics-addr", metrics_addr]);
        command
    }

    /// Writes `config` as `reflex.yaml`, readable by its owner only (as a
    /// file holding sink tokens must be), and returns its path.
    pub fn config(&self, config: &str) -> PathBuf {
        let path = self.path("reflex.yaml");
        fs::write(&path, config).expect("agent config");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod config");
        path
    }

    /// Starts `reflex run` with `config` as its configuration file.
    pub fn start_with_config(&self, config: &str) -> Agent {
        let path = self.config(config);
        let mut command = self.run_command(&reflex_bin());
        command.arg("--config").arg(&path);
        start_agent_with(&mut command, "reflex running")
    }

    /// Starts `reflex run` on the scratch policies and state directory.
    pub fn start(&self) -> Agent {
        start_agent_with(&mut self.run_command(&reflex_bin()), "reflex running")
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Receives records until `found` returns true for one, or `limit` passes.
pub async fn wait_for_record(
    records: &mut reflex::lanes::LaneReceiver<Record>,
    limit: Duration,
    mut found: impl FnMut(&Record) -> bool,
) -> Option<Record> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, records.next()).await {
            Ok(Some(record)) if found(&record) => return Some(record),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

/// The address `reflex run` serves `/metrics` on, from its log.
pub fn metrics_addr(agent: &Agent) -> SocketAddr {
    agent
        .metrics_addr(Duration::from_secs(10))
        .expect("reflex logs its metrics address")
}

/// A plain HTTP/1.0 GET on loopback; returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    reflex_harness::http_get(addr, path).unwrap_or_else(|e| panic!("{e}"))
}

/// The agent's `/metrics` at `addr`, parsed.
pub fn scrape(addr: SocketAddr) -> Metrics {
    reflex_harness::scrape(addr).unwrap_or_else(|e| panic!("{e}"))
}

/// The value of the first series of `/metrics` at `addr` that starts with
/// `series` (0 when absent).
pub fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    http_get(addr, "/metrics")
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `check` every 10 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A process started indirectly (by a hook, a shell); killed by pid on
/// drop if it still runs.
pub struct Leftover(pub Option<u32>);

impl Drop for Leftover {
    fn drop(&mut self) {
        if let Some(pid) = self.0.filter(|&p| running(p)) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// The peak resident set (`VmHWM`) of process `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Whether `pid` runs (a zombie has ended).
pub fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// A free loopback port (bound and released; good enough for a test server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One HTTP request a [`webhook_receiver`] took: header lines and body.
pub type Request = (Vec<String>, Vec<u8>);

/// Answers up to `max` HTTP requests on `server` with 200 and hands each
/// to the returned channel; then stops.
pub fn webhook_receiver(server: std::net::TcpListener, max: usize) -> mpsc::Receiver<Request> {
    use std::io::{Read as _, Write as _};
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in server.incoming().take(max) {
            let Ok(mut stream) = stream else { continue };
            let Ok(read_half) = stream.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(read_half);
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                headers.push(line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).ok();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .ok();
            let _ = tx.send((headers, body));
        }
    });
    rx
}

/// Runs `command` to completion (bounded), output discarded; returns its pid.
pub fn run_to_end(command: &mut Command, limit: Duration) -> u32 {
    let mut child = ChildGuard::spawn(
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let pid = child.pid();
    child.wait_for(limit).expect("the command finishes");
    pid
}

/// Polls until `path` holds `content` or `limit` passes.
pub fn holds(path: &Path, content: &str, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if fs::read_to_string(path).is_ok_and(|c| c == content) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The next alert on the agent's stdout about file `path` for which
/// `matches` holds; fails the test after `limit`.
pub fn file_alert(
    agent: &Agent,
    path: &Path,
    limit: Duration,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let path = path.to_str().expect("utf-8");
    let line = agent
        .stdout_line(limit, |l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["event"]["file"]["path"] == path && matches(&v))
        })
        .unwrap_or_else(|| panic!("no such alert about {path} within {limit:?}"));
    serde_json::from_str(&line).expect("alert JSON")
}

/// `reflex baseline ARGS --state-dir STATE`: its exit code and stdout
/// (both echoed on the test's stderr).
pub fn reflex_baseline(state: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(reflex_bin())
        .arg("baseline")
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("reflex baseline runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "$ reflex baseline {}\n{stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

/// Stops an agent with SIGTERM and checks that it exits 0.
pub fn stop_agent(mut agent: Agent) {
    agent.guard.signal(Signal::SIGTERM);
    assert!(
        agent
            .guard
            .wait_for(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "the agent exits 0 on SIGTERM"
    );
}
