//! `run`: hook commands, with the event as JSON on stdin, a time limit, caps
//! on how many run at once (overall and per policy), and their output, cut
//! to a cap, in the log. Each hook leads a process group of its own; when it
//! ends or times out the whole group is killed, so nothing it started
//! outlives it (and stays excluded from policies, as the agent's
//! descendants are).
use std::{
    collections::HashMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, Interest, unix::AsyncFd},
    process::{Child, Command},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::telemetry::Metrics;

/// Default cap on hooks running at once.
pub const DEFAULT_MAX_HOOKS: usize = 16;

/// Default cap on hooks of one policy running at once.
pub const DEFAULT_MAX_HOOKS_PER_POLICY: usize = 4;

/// Default bytes of each output stream of a hook kept for the log.
pub const DEFAULT_OUTPUT_MAX_BYTES: usize = 4096;

/// The `component` label of the hook runner.
const COMPONENT: &str = "hooks";

/// Why a hook did not start.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Too many hooks are running.
    #[error("{0} hooks already running; this one was skipped")]
    Busy(usize),
    /// Too many hooks of this policy are running.
    #[error("{max} hooks of policy {policy} already running; this one was skipped")]
    PolicyBusy {
        /// The policy.
        policy: String,
        /// Its cap.
        max: usize,
    },
    /// The program could not be started.
    #[error("starting hook {program}")]
    Spawn {
        /// Program path.
        program: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Bounds on hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookLimits {
    /// Hooks running at once.
    pub max: usize,
    /// Hooks of one policy running at once.
    pub max_per_policy: usize,
    /// Bytes of stdout and of stderr kept for the log.
    pub output_max_bytes: usize,
}

impl Default for HookLimits {
    fn default() -> Self {
        Self {
            max: DEFAULT_MAX_HOOKS,
            max_per_policy: DEFAULT_MAX_HOOKS_PER_POLICY,
            output_max_bytes: DEFAULT_OUTPUT_MAX_BYTES,
        }
    }
}

/// What a hook inherits that the agent changed for itself: the descriptor
/// soft limit and the umask it had when it started.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inherited {
    /// `RLIMIT_NOFILE` (soft, hard) to set back.
    pub nofile: Option<(u64, u64)>,
    /// umask to set back.
    pub umask: Option<u32>,
}

/// Starts hooks in the background within [`HookLimits`].
#[derive(Clone)]
pub struct HookRunner {
    slots: Arc<Semaphore>,
    per_policy: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    limits: HookLimits,
    inherited: Inherited,
    metrics: Option<Metrics>,
}

impl HookRunner {
    /// A runner within `limits`.
    pub fn new(limits: HookLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max)),
            per_policy: Arc::default(),
            limits,
            inherited: Inherited::default(),
            metrics: None,
        }
    }

    /// Hooks start with `inherited` set back.
    pub fn with_inherited(mut self, inherited: Inherited) -> Self {
        self.inherited = inherited;
        self
    }

    /// Counts running, skipped and timed-out hooks and cut output in
    /// `metrics`, and reports the runner's health there.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        metrics.health.up(COMPONENT);
        self.metrics = Some(metrics);
        self
    }

    /// A slot under the policy's own cap; slots of policies with nothing
    /// running are forgotten, so the map holds only running policies.
    fn policy_slot(&self, policy: &str) -> Result<OwnedSemaphorePermit, HookError> {
        let mut slots = self.per_policy.lock().unwrap_or_else(|e| e.into_inner());
        let max = self.limits.max_per_policy;
        slots.retain(|name, s| name == policy || s.available_permits() < max);
        let slot = slots
            .entry(policy.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone();
        slot.try_acquire_owned().map_err(|_| HookError::PolicyBusy {
            policy: policy.to_string(),
            max,
        })
    }

    fn skipped(&self, policy: &str, reason: &str) {
        if let Some(m) = &self.metrics {
            m.limits
                .hooks_skipped
                .with_label_values(&[policy, reason])
                .inc();
        }
    }

    /// Starts `argv` with `stdin` written to it; returns once it started.
    /// Its exit, output and any time-out are logged under `policy`.
    pub fn start(
        &self,
        policy: &str,
        argv: Vec<String>,
        stdin: Vec<u8>,
        timeout: Duration,
    ) -> Result<u32, HookError> {
        let Ok(overall) = self.slots.clone().try_acquire_owned() else {
            self.skipped(policy, "busy");
            return Err(HookError::Busy(self.limits.max));
        };
        let own = self.policy_slot(policy).inspect_err(|_| {
            self.skipped(policy, "policy_busy");
        })?;
        let program = argv.first().cloned().unwrap_or_default();
        let mut command = Command::new(&program);
        command
            .args(&argv[1..])
            .env("REFLEX_POLICY", policy)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let inherited = self.inherited;
        // SAFETY: between fork and exec the closure makes only
        // async-signal-safe calls (setrlimit, umask) on values copied in
        // before the fork; it allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(move || {
                if let Some((soft, hard)) = inherited.nofile {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                }
                if let Some(mask) = inherited.umask {
                    libc::umask(mask);
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| {
            if let Some(m) = &self.metrics {
                m.health.down(COMPONENT, &source.to_string());
            }
            HookError::Spawn {
                program: program.clone(),
                source,
            }
        })?;
        let pid = child.id().unwrap_or(0);
        let hook = Hook {
            policy: policy.to_string(),
            program,
            pid,
            output_max: self.limits.output_max_bytes,
            metrics: self.metrics.clone(),
        };
        if let Some(m) = &self.metrics {
            m.health.up(COMPONENT);
            m.limits.hooks_running.inc();
        }
        tokio::spawn(async move {
            let _permits = (overall, own);
            hook.supervise(child, stdin, timeout).await;
        });
        Ok(pid)
    }
}

/// One running hook.
struct Hook {
    policy: String,
    program: String,
    pid: u32,
    output_max: usize,
    metrics: Option<Metrics>,
}

/// Output kept from one stream, and how much more there was.
#[derive(Default)]
struct Output {
    kept: Vec<u8>,
    more: u64,
}

impl Output {
    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.kept);
        match self.more {
            0 => text.trim_end().to_string(),
            more => format!("{}… ({more} bytes more)", text.trim_end()),
        }
    }
}

impl Hook {
    /// Writes stdin, reads output and waits for the exit, all under
    /// `timeout`; then kills what is left of the process group.
    async fn supervise(self, mut child: Child, stdin: Vec<u8>, timeout: Duration) {
        // Exit is watched on a pidfd so that the hook is not reaped before
        // its group is killed: an unreaped leader keeps the group id from
        // being reused.
        let exited = rustix::process::Pid::from_raw(self.pid as i32)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
            // SAFETY: the pidfd is an open descriptor the AsyncFd owns, and
            // so stays open and the same until the AsyncFd is dropped.
            .and_then(|fd| unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok());
        let input = child.stdin.take();
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let cap = self.output_max;
        let run = async {
            let write = async move {
                if let Some(mut input) = input {
                    // A hook that ignores stdin may close it early; that is fine.
                    let _ = input.write_all(&stdin).await;
                }
            };
            let exit = async {
                match &exited {
                    Some(fd) => {
                        let _ = fd.readable().await;
                    }
                    // No pidfd (out of descriptors): reaped here, and the
                    // group is killed only while the hook still runs.
                    None => {
                        let _ = child.wait().await;
                    }
                }
            };
            let (_, out, err, _) =
                tokio::join!(write, read_capped(out, cap), read_capped(err, cap), exit);
            (out, err)
        };
        let finished = tokio::time::timeout(timeout, run).await;
        if exited.is_some() || finished.is_err() {
            // The leader is running or exited but unreaped: the group id
            // is still its own.
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
        let status = child.wait().await;
        if let Some(m) = &self.metrics {
            m.limits.hooks_running.dec();
        }
        let (policy, hook, pid) = (&self.policy, &self.program, self.pid);
        match (finished, status) {
            (Ok((out, err)), Ok(status)) => {
                if out.more + err.more > 0
                    && let Some(m) = &self.metrics
                {
                    m.limits.truncated("hook_output").inc();
                }
                tracing::info!(
                    policy,
                    hook,
                    pid,
                    status = %status,
                    stdout = %out.text(),
                    stderr = %err.text(),
                    "hook finished"
                );
            }
            (Ok(_), Err(err)) => tracing::warn!(policy, hook, %err, "hook failed"),
            (Err(_), _) => {
                if let Some(m) = &self.metrics {
                    m.limits.hooks_timed_out.with_label_values(&[policy]).inc();
                }
                tracing::warn!(
                    policy,
                    hook,
                    pid,
                    timeout = ?timeout,
                    "hook timed out and was killed with its process group"
                );
            }
        }
    }
}

/// Reads `pipe` to its end, keeping the first `cap` bytes.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> Output {
    let mut output = Output::default();
    let Some(mut pipe) = pipe else {
        return output;
    };
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return output,
            Ok(n) => {
                let room = cap.saturating_sub(output.kept.len()).min(n);
                output.kept.extend_from_slice(&buf[..room]);
                output.more += (n - room) as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pid` runs (a zombie has ended).
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    }

    /// Polls `check` every 25 ms, at most `tries` times.
    async fn eventually(tries: usize, mut check: impl FnMut() -> bool) -> bool {
        for _ in 0..tries {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        check()
    }

    /// Kills a process this test started (through a hook) if it is left.
    struct Leftover(Option<u32>);

    impl Drop for Leftover {
        fn drop(&mut self) {
            if let Some(pid) = self.0.filter(|&p| alive(p)) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }

    #[tokio::test]
    async fn a_timed_out_hook_is_killed_with_its_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let metrics = Metrics::new();
        let runner = HookRunner::new(HookLimits::default()).with_metrics(metrics.clone());
        // The hook starts a grandchild in the background and waits for it.
        let script = format!("sleep 300 & echo $! > {}; wait", pids.display());
        let argv = vec!["/bin/sh".into(), "-c".into(), script];
        let pid = runner
            .start("p", argv, Vec::new(), Duration::from_secs(5))
            .unwrap();
        let mut leftover = Leftover(None);
        let read = || {
            std::fs::read_to_string(&pids)
                .ok()?
                .trim()
                .parse::<u32>()
                .ok()
        };
        assert!(eventually(400, || read().is_some()).await, "no grandchild");
        leftover.0 = read();
        let grandchild = leftover.0.unwrap();
        let timed_out = metrics.limits.hooks_timed_out.with_label_values(&["p"]);
        let done = || timed_out.get() == 1 && metrics.limits.hooks_running.get() == 0;
        assert!(eventually(800, done).await, "the hook timed out");
        assert!(!alive(pid), "the hook is gone");
        assert!(
            eventually(200, || !alive(grandchild)).await,
            "its grandchild {grandchild} is gone too"
        );
    }

    #[tokio::test]
    async fn one_policy_cannot_take_every_slot() {
        let dir = tempfile::tempdir().unwrap();
        let gate = dir.path().join("open");
        let metrics = Metrics::new();
        let limits = HookLimits {
            max: 4,
            max_per_policy: 2,
            output_max_bytes: 64,
        };
        let runner = HookRunner::new(limits).with_metrics(metrics.clone());
        // Each hook runs until the gate file appears.
        let script = format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display());
        let hook = || vec!["/bin/sh".to_string(), "-c".to_string(), script.clone()];
        let long = Duration::from_secs(120);
        let start = |policy: &str| runner.start(policy, hook(), Vec::new(), long);
        let noisy: Vec<_> = (0..3).map(|_| start("noisy")).collect();
        assert!(noisy[0].is_ok() && noisy[1].is_ok());
        assert!(
            matches!(noisy[2], Err(HookError::PolicyBusy { .. })),
            "{:?}",
            noisy[2]
        );
        assert!(start("quiet").is_ok(), "another policy still gets a slot");
        let skipped = metrics
            .limits
            .hooks_skipped
            .with_label_values(&["noisy", "policy_busy"]);
        assert_eq!(skipped.get(), 1);
        assert_eq!(metrics.limits.hooks_running.get(), 3);
        assert!(start("third").is_ok());
        assert!(
            matches!(start("fourth"), Err(HookError::Busy(4))),
            "the overall cap still holds"
        );
        std::fs::write(&gate, "").unwrap();
        let running = &metrics.limits.hooks_running;
        assert!(eventually(800, || running.get() == 0).await);
        assert!(start("noisy").is_ok(), "slots come back");
        assert!(eventually(800, || running.get() == 0).await);
    }

    #[tokio::test]
    async fn output_is_kept_up_to_the_cap() {
        let output = read_capped(Some(&b"x".repeat(10_000)[..]), 100).await;
        assert_eq!((output.kept.len(), output.more), (100, 9_900));
        assert!(output.text().ends_with("(9900 bytes more)"));
    }
}
