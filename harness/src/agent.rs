//! Starting a `reflex` process and waiting for the log line that says it is
//! ready; its output as lines.
use std::{
    cell::RefCell,
    io::{BufRead as _, BufReader, Read},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use crate::{ChildGuard, Error};

/// Adds `run --policies POLICIES --state-dir STATE --metrics-addr
/// 127.0.0.1:0` (metrics on a free loopback port) to `command`, which runs
/// the agent binary or a wrapper of it (`taskset`, `setpriv`).
pub fn run_args<'a>(command: &'a mut Command, policies: &Path, state: &Path) -> &'a mut Command {
    command
        .arg("run")
        .arg("--policies")
        .arg(policies)
        .arg("--state-dir")
        .arg(state)
        .args(["--metrics-addr", "127.0.0.1:0"])
}

/// How to start an agent and recognise that it is ready.
#[derive(Debug, Clone)]
pub struct Launch {
    ready: String,
    limit: Duration,
    echo: Option<String>,
    keep_stdout: bool,
}

impl Launch {
    /// Waits up to 30 s for a log line (stderr) containing `ready`; stdout
    /// is kept as lines, the log is not echoed.
    pub fn new(ready: &str) -> Self {
        Self {
            ready: ready.to_string(),
            limit: Duration::from_secs(30),
            echo: None,
            keep_stdout: true,
        }
    }

    /// Waits up to `limit` for the readiness line instead.
    pub fn within(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Echoes every log line on this process's stderr after `prefix`.
    pub fn echo(mut self, prefix: &str) -> Self {
        self.echo = Some(prefix.to_string());
        self
    }

    /// Sends the agent's stdout to /dev/null (its stdout lines stay empty).
    pub fn discard_stdout(mut self) -> Self {
        self.keep_stdout = false;
        self
    }

    /// Spawns `command` (stdin null, stdout and stderr set here) and waits
    /// for the readiness line. On failure the child is killed and reaped.
    pub fn start(&self, command: &mut Command) -> Result<Agent, Error> {
        let description = format!("{command:?}");
        let stdout = if self.keep_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut guard = ChildGuard::spawn(
            command
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(Stdio::piped()),
        )?;
        let stdout = match guard.take_stdout() {
            Some(out) => forward_lines(out, None),
            None => mpsc::channel().1,
        };
        let stderr = forward_lines(
            guard.take_stderr().expect("stderr was piped above"),
            self.echo.clone(),
        );
        let mut agent = Agent {
            guard,
            stdout,
            stderr,
            log: RefCell::new(Vec::new()),
        };
        if agent.log_line(self.limit, &self.ready).is_none() {
            let status = agent.guard.wait_for(Duration::from_millis(500))?;
            return Err(Error::NotReady {
                command: description,
                ready: self.ready.clone(),
                limit: self.limit,
                status,
            });
        }
        Ok(agent)
    }
}

/// A running agent and its output as lines. `G` guards the process:
/// [`ChildGuard`], or a caller's wrapper of it ([`Agent::map_guard`]).
pub struct Agent<G = ChildGuard> {
    /// The process; killed on drop if still running.
    pub guard: G,
    /// Lines it printed on stdout.
    pub stdout: mpsc::Receiver<String>,
    /// Lines it logged on stderr not yet read by [`Agent::log_line`].
    pub stderr: mpsc::Receiver<String>,
    /// Log lines already read by [`Agent::log_line`].
    pub log: RefCell<Vec<String>>,
}

impl<G> Agent<G> {
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

    /// The address `reflex run` serves `/metrics` on, from its log line
    /// `metrics at http://ADDR/metrics` (waiting up to `limit` for it).
    pub fn metrics_addr(&self, limit: Duration) -> Result<SocketAddr, Error> {
        self.log_line(limit, "metrics at http://")
            .and_then(|line| {
                let rest = &line[line.find("http://")? + "http://".len()..];
                rest[..rest.find('/')?].parse().ok()
            })
            .ok_or(Error::NoMetricsAddr)
    }

    /// The same agent with its guard wrapped by `wrap`.
    pub fn map_guard<H>(self, wrap: impl FnOnce(G) -> H) -> Agent<H> {
        Agent {
            guard: wrap(self.guard),
            stdout: self.stdout,
            stderr: self.stderr,
            log: self.log,
        }
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

/// Reads `reader` line by line on a thread of its own into a channel,
/// echoing each line after `echo` on stderr.
fn forward_lines(
    reader: impl Read + Send + 'static,
    echo: Option<String>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if let Some(prefix) = &echo {
                eprintln!("{prefix}{line}");
            }
            // Keep reading after the receiver is gone: a closed pipe would
            // make the agent's next write fail.
            let _ = tx.send(line);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn start_returns_once_the_ready_line_is_logged_and_keeps_earlier_lines() {
        let agent = Launch::new("reflex running")
            .start(&mut shell(
                "echo out; echo 'INFO metrics at http://127.0.0.1:9807/metrics' >&2; \
                 echo 'INFO reflex running' >&2; exec sleep 30",
            ))
            .expect("ready");
        assert_eq!(
            agent.metrics_addr(Duration::ZERO).expect("address"),
            "127.0.0.1:9807".parse().unwrap()
        );
        assert_eq!(
            agent.stdout_line(Duration::from_secs(5), |l| l == "out"),
            Some("out".to_string())
        );
    }

    #[test]
    fn a_process_that_exits_before_it_is_ready_is_an_error_with_its_status() {
        let err = Launch::new("reflex running")
            .discard_stdout()
            .start(&mut shell("echo starting >&2; exit 3"))
            .err()
            .expect("not ready");
        match err {
            Error::NotReady { status, .. } => assert_eq!(status.and_then(|s| s.code()), Some(3)),
            other => panic!("unexpected error: {other}"),
        }
    }
}
