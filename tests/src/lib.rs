//! Helpers shared by the root integration tests: guards that clean up what a
//! test started even when it fails, and bounded waits.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
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

pub mod programs;

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

    /// Guards a child spawned elsewhere.
    pub fn adopt(child: Child) -> Self {
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

/// A running `reflex` child with its output as lines.
pub struct Agent {
    /// The process; killed on drop if still running.
    pub guard: ChildGuard,
    /// Lines it printed on stdout.
    pub stdout: mpsc::Receiver<String>,
    /// Lines it logged on stderr (also echoed to the test's stderr).
    pub stderr: mpsc::Receiver<String>,
    /// Log lines already read by [`Agent::log_line`].
    pub log: std::cell::RefCell<Vec<String>>,
}

impl Agent {
    /// Waits up to `limit` for a stdout line for which `found` is true.
    pub fn stdout_line(&self, limit: Duration, found: impl FnMut(&str) -> bool) -> Option<String> {
        wait_line(&self.stdout, limit, found)
    }

    /// Waits up to `limit` for a log line containing `text`; lines read
    /// before, by earlier calls, count too.
    pub fn log_line(&self, limit: Duration, text: &str) -> Option<String> {
        if let Some(line) = self.log.borrow().iter().find(|l| l.contains(text)) {
            return Some(line.clone());
        }
        let log = &self.log;
        wait_line(&self.stderr, limit, |l| {
            log.borrow_mut().push(l.to_string());
            l.contains(text)
        })
    }
}

fn wait_line(
    lines: &mpsc::Receiver<String>,
    limit: Duration,
    mut found: impl FnMut(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match lines.recv_timeout(left) {
            Ok(line) if found(&line) => return Some(line),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

fn forward_lines(
    reader: impl std::io::Read + Send + 'static,
    echo: bool,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[reflex] {line}");
            }
            // Keep reading after the receiver is gone: a closed pipe would
            // make the agent's next log line fail.
            let _ = tx.send(line);
        }
    });
    rx
}

/// Starts `reflex ARGS` with piped stdout and stderr, and waits (bounded)
/// until its log says `ready`.
pub fn start_agent(args: &[&str], ready: &str) -> Agent {
    start_agent_with(Command::new(reflex_bin()).args(args), ready)
}

/// Like [`start_agent`] for a prepared command (a wrapper such as `setpriv`,
/// extra environment); stdin, stdout and stderr are set here.
pub fn start_agent_with(command: &mut Command, ready: &str) -> Agent {
    let args = format!("{command:?}");
    let mut guard = ChildGuard::spawn(
        command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stderr = guard
        .child
        .as_mut()
        .and_then(|c| c.stderr.take())
        .expect("stderr piped");
    let stdout = guard.take_stdout();
    let agent = Agent {
        guard,
        stdout: forward_lines(stdout, false),
        stderr: forward_lines(stderr, true),
        log: std::cell::RefCell::new(Vec::new()),
    };
    let mut agent = agent;
    if agent.log_line(Duration::from_secs(30), ready).is_none() {
        let status = agent.guard.wait_for(Duration::from_millis(500));
        panic!("{args} did not log {ready:?} within 30 s (exit status: {status:?})");
    }
    agent
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
        command
            .arg("run")
            .arg("--policies")
            .arg(self.path("policies"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .args(["--metrics-addr", "127.0.0.1:0"]);
        command
    }

    /// Starts `reflex run` with `config` as its configuration file.
    pub fn start_with_config(&self, config: &str) -> Agent {
        let path = self.path("reflex.yaml");
        fs::write(&path, config).expect("agent config");
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

/// The address `reflex run` serves `/metrics` on, from its log.
pub fn metrics_addr(agent: &Agent) -> std::net::SocketAddr {
    let line = agent
        .log_line(Duration::from_secs(10), "metrics at http://")
        .expect("reflex logs its metrics address");
    let start = line.find("http://").expect("address") + "http://".len();
    let rest = &line[start..];
    let end = rest.find('/').expect("path");
    rest[..end].parse().expect("socket address")
}

/// A plain HTTP/1.0 GET on loopback; returns the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("connect to a local HTTP server");
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
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
