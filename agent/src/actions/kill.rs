//! `kill`: signal a process through a pidfd, so a reused pid is never hit;
//! `target: parent` signals the process's parent as it is at kill time.
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
    /// The process changed parents while its parent was being opened.
    #[error("the parent of pid {0} changed while it was looked up; not signalled")]
    Reparented(u32),
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
    send(&pidfd, pid, signal)
}

/// Sends `signal` to the current parent of `pid` (which must have existed
/// at `event_ktime_ns`), read from `/proc/PID/stat` now, never a parent
/// remembered from before a reparenting: the parent is pinned with a pidfd,
/// the child is checked to still have it, and the parent must have started
/// before the child (as a parent, even an adoptive one, always did).
pub fn kill_parent(pid: u32, event_ktime_ns: u64, signal: Signal) -> Result<u32, KillError> {
    if pid <= 1 || pid == std::process::id() {
        return Err(KillError::Protected(pid));
    }
    let _child = open(pid)?;
    let child_start = start_time_ns(pid).ok_or(KillError::Gone(pid))?;
    if child_start > event_ktime_ns + tick_ns() {
        return Err(KillError::Reused(pid));
    }
    let ppid = parent_of(pid).ok_or(KillError::Gone(pid))?;
    if ppid <= 1 || ppid == std::process::id() {
        return Err(KillError::Protected(ppid));
    }
    let parent = open(ppid)?;
    // Both pinned: if the child still names this parent, it is the one.
    if parent_of(pid) != Some(ppid) {
        return Err(KillError::Reparented(pid));
    }
    match start_time_ns(ppid) {
        Some(start) if start > child_start => return Err(KillError::Reused(ppid)),
        None => return Err(KillError::Gone(ppid)),
        Some(_) => {}
    }
    send(&parent, ppid, signal).map(|()| ppid)
}

fn send(pidfd: &OwnedFd, pid: u32, signal: Signal) -> Result<(), KillError> {
    let sig = rustix::process::Signal::from_named_raw(signal as i32).ok_or_else(|| {
        KillError::Signal {
            pid,
            source: io::Error::from_raw_os_error(libc::EINVAL),
        }
    })?;
    pidfd_send_signal(pidfd, sig).map_err(|e| match e {
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

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses), from the state on.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split(' ').map(str::to_string).collect())
}

/// Boot-time nanoseconds at which `pid` started, from `/proc/PID/stat`.
fn start_time_ns(pid: u32) -> Option<u64> {
    let ticks: u64 = stat_fields(pid)?.get(19)?.parse().ok()?;
    Some(ticks * tick_ns())
}

/// The parent of `pid` now, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
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

    #[test]
    fn the_parent_is_the_current_one_after_a_reparenting() {
        use std::{io::BufRead as _, os::unix::process::CommandExt as _};
        // A subreaper (the outer shell) adopts the sleep its inner shell
        // started and left: the sleep's parent changes from the inner shell
        // (gone) to the outer one.
        let mut outer = std::process::Command::new("/bin/sh");
        outer
            .args(["-c", "sh -c 'sleep 30 & echo $!'; exec sleep 30"])
            .stdout(std::process::Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            outer.pre_exec(
                || match libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) {
                    0 => Ok(()),
                    _ => Err(io::Error::last_os_error()),
                },
            );
        }
        let mut outer = outer.spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(outer.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let orphan: u32 = line.trim().parse().unwrap();
        let mut adopted = false;
        for _ in 0..400 {
            if parent_of(orphan) == Some(outer.id()) {
                adopted = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let now = crate::events::clock::BootClock::now_ns();
        let killed = adopted.then(|| kill_parent(orphan, now, Signal::SIGKILL));
        let status = if matches!(killed, Some(Ok(_))) {
            outer.wait().unwrap()
        } else {
            let _ = outer.kill();
            outer.wait().unwrap()
        };
        // The orphan is ours to end whatever happened.
        if let Ok(fd) = open(orphan) {
            let _ = send(&fd, orphan, Signal::SIGKILL);
        }
        assert!(adopted, "the outer shell adopted the sleep");
        assert_eq!(killed.unwrap().unwrap(), outer.id());
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(9), "the current parent was killed");
    }

    #[test]
    fn init_and_the_agent_are_never_a_parent_to_kill() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let now = crate::events::clock::BootClock::now_ns();
        let result = kill_parent(child.id(), now, Signal::SIGKILL);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(matches!(result, Err(KillError::Protected(_))), "{result:?}");
    }
}
