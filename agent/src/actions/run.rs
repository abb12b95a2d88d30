//! `run`: hook commands, with the event as JSON on stdin, a time limit, a cap
//! on how many run at once, and their output in the log.
use std::{process::Stdio, sync::Arc, time::Duration};

use tokio::{io::AsyncWriteExt as _, process::Command, sync::Semaphore};

/// Default cap on hooks running at once.
pub const DEFAULT_MAX_HOOKS: usize = 16;

/// Why a hook did not start.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Too many hooks are running.
    #[error("{0} hooks already running; this one was skipped")]
    Busy(usize),
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

/// Starts hooks in the background, at most `max` at a time.
#[derive(Clone)]
pub struct HookRunner {
    slots: Arc<Semaphore>,
    max: usize,
}

impl HookRunner {
    /// A runner allowing `max` hooks at once.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
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
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| HookError::Busy(self.max))?;
        let program = argv.first().cloned().unwrap_or_default();
        let mut child = Command::new(&program)
            .args(&argv[1..])
            .env("REFLEX_POLICY", policy)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HookError::Spawn {
                program: program.clone(),
                source,
            })?;
        let pid = child.id().unwrap_or(0);
        let policy = policy.to_string();
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(mut input) = child.stdin.take() {
                // A hook that ignores stdin may close it early; that is fine.
                let _ = input.write_all(&stdin).await;
            }
            match tokio::time::timeout(timeout, child.wait_with_output()).await {
                Ok(Ok(output)) => {
                    tracing::info!(
                        policy,
                        hook = program,
                        pid,
                        status = %output.status,
                        stdout = %String::from_utf8_lossy(&output.stdout).trim_end(),
                        stderr = %String::from_utf8_lossy(&output.stderr).trim_end(),
                        "hook finished"
                    );
                }
                Ok(Err(err)) => tracing::warn!(policy, hook = program, %err, "hook failed"),
                Err(_) => tracing::warn!(
                    policy,
                    hook = program,
                    timeout = ?timeout,
                    "hook timed out and was killed"
                ),
            }
        });
        Ok(pid)
    }
}
