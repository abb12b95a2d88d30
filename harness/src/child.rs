//! A child process that is ended when its guard goes, and only that child.
use std::{
    process::{Child, ChildStderr, ChildStdout, Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::Error;

/// A child process this program started. Dropping the guard kills the
/// child (SIGKILL to its pid) and reaps it, unless it was reaped already.
///
/// Signals go to the child's pid only, never to a group or a name, and
/// only while the child is unreaped: until then its pid cannot have been
/// given to another process.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    pid: u32,
}

impl ChildGuard {
    /// Spawns `command` and guards the child.
    pub fn spawn(command: &mut Command) -> Result<Self, Error> {
        let child = command.spawn().map_err(|source| Error::Spawn {
            command: format!("{command:?}"),
            source,
        })?;
        Ok(Self::adopt(child))
    }

    /// Guards a child spawned elsewhere.
    pub fn adopt(child: Child) -> Self {
        Self {
            pid: child.id(),
            child: Some(child),
        }
    }

    /// The child's pid (kept after it is reaped, for messages).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Takes the child's stdout, if it was piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// Takes the child's stderr, if it was piped and not taken yet.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.as_mut().and_then(|c| c.stderr.take())
    }

    /// Sends `signal` to the child; refused once the child is reaped.
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        if self.child.is_none() {
            return Err(Error::Reaped(self.pid));
        }
        let pid = i32::try_from(self.pid).map_err(|_| Error::Reaped(self.pid))?;
        kill(Pid::from_raw(pid), signal).map_err(|source| Error::Signal {
            pid: self.pid,
            source,
        })
    }

    /// Waits up to `limit` for the child to exit and reaps it; `None` if
    /// it is still running. After the child is reaped this returns `None`.
    pub fn wait_for(&mut self, limit: Duration) -> Result<Option<ExitStatus>, Error> {
        let deadline = Instant::now() + limit;
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        loop {
            let status = child.try_wait().map_err(|source| Error::Wait {
                pid: self.pid,
                source,
            })?;
            if let Some(status) = status {
                self.child = None;
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the child to exit.
    pub fn terminate(&mut self, limit: Duration) -> Result<ExitStatus, Error> {
        self.signal(Signal::SIGTERM)?;
        self.wait_for(limit)?.ok_or(Error::StillRunning {
            pid: self.pid,
            limit,
        })
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // Child::kill sends SIGKILL to this child's pid (or pidfd); it
            // is still unreaped, so the pid is still ours.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_guard_kills_and_reaps_its_child() {
        let guard = ChildGuard::spawn(Command::new("sleep").arg("30")).expect("sleep");
        let pid = Pid::from_raw(guard.pid() as i32);
        drop(guard);
        // Reaped: the pid no longer names a process of ours.
        assert_eq!(kill(pid, None), Err(nix::errno::Errno::ESRCH));
    }

    #[test]
    fn terminate_reports_the_exit_and_further_signals_are_refused() {
        let mut guard = ChildGuard::spawn(Command::new("sleep").arg("30")).expect("sleep");
        let status = guard.terminate(Duration::from_secs(5)).expect("exits");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(Signal::SIGTERM as i32)
        );
        assert!(matches!(
            guard.signal(Signal::SIGKILL),
            Err(Error::Reaped(_))
        ));
        assert!(guard.wait_for(Duration::ZERO).expect("no error").is_none());
    }
}
