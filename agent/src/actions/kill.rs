//! `kill`: signal a process through a pidfd, so a reused pid is never hit.
use std::{fs, io, os::fd::OwnedFd};

use nix::sys::signal::Signal;
use rustix::process::{Pid, PidfdFlags, pidfd_open, pidfd_send_signal};

/// Why a kill was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// The target is pid 0/1 or the agent itself.
    #[error("refusing to signal pid {0} (init or the agent itself)")]
    Protected(u32),
    /// The process is already gone.
    #[error("process {0} has already exited")]
    Gone(u32),
    /// The pid now belongs to a process started after the event.
    #[error("pid {0} was reused by a newer process; not signalled")]
    Reused(u32),
    /// The kernel refused.
    #[error("signalling pid {pid}")]
    Signal {
        /// Target pid.
        pid: u32,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
}

/// Sends `signal` to `pid`, which must have existed at `event_ktime_ns`
/// (boot-time nanoseconds): the pidfd pins the process, and its start time
/// proves it is the one the event was about.
pub fn kill(pid: u32, event_ktime_ns: u64, signal: Signal) -> Result<(), KillError> {
    if pid <= 1 || pid == std::process::id() {
        return Err(KillError::Protected(pid));
    }
    let pidfd = open(pid)?;
    // With the pidfd held the pid cannot be recycled; check who holds it now.
    match start_time_ns(pid) {
        Some(start) if start > event_ktime_ns + tick_ns() => return Err(KillError::Reused(pid)),
        None => return Err(KillError::Gone(pid)),
        Some(_) => {}
    }
    let sig = rustix::process::Signal::from_named_raw(signal as i32).ok_or_else(|| {
        KillError::Signal {
            pid,
            source: io::Error::from_raw_os_error(libc::EINVAL),
        }
    })?;
    pidfd_send_signal(&pidfd, sig).map_err(|e| match e {
        rustix::io::Errno::SRCH => KillError::Gone(pid),
        e => KillError::Signal {
            pid,
            source: e.into(),
        },
    })
}

fn open(pid: u32) -> Result<OwnedFd, KillError> {
    let raw = Pid::from_raw(pid as i32).ok_or(KillError::Protected(pid))?;
    pidfd_open(raw, PidfdFlags::empty()).map_err(|e| match e {
        rustix::io::Errno::SRCH => KillError::Gone(pid),
        e => KillError::Signal {
            pid,
            source: e.into(),
        },
    })
}

/// Length of one `/proc` start-time tick.
fn tick_ns() -> u64 {
    1_000_000_000 / procfs::ticks_per_second().max(1)
}

/// Boot-time nanoseconds at which `pid` started, from `/proc/PID/stat`.
fn start_time_ns(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces, start after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let ticks: u64 = rest.split(' ').nth(19)?.parse().ok()?;
    Some(ticks * tick_ns())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_init_and_itself() {
        assert!(matches!(
            kill(1, u64::MAX, Signal::SIGKILL),
            Err(KillError::Protected(1))
        ));
        let me = std::process::id();
        assert!(matches!(
            kill(me, u64::MAX, Signal::SIGKILL),
            Err(KillError::Protected(_))
        ));
    }

    #[test]
    fn a_process_newer_than_the_event_is_not_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let result = kill(child.id(), 0, Signal::SIGKILL);
        assert!(matches!(result, Err(KillError::Reused(_))), "{result:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn kills_a_process_that_existed_at_the_event() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let now = crate::events::clock::BootClock::now_ns();
        kill(child.id(), now, Signal::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(9));
    }
}
