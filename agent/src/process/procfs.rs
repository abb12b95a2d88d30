//! Reading a process's identity from `/proc`, for start-up seeding and for
//! processes the table has not seen exec. What a process controls (its
//! arguments, its name) is read only up to the agent's caps: a 5 MiB
//! command line costs 1 KiB, like an exec event.
use std::io::Read as _;

use procfs::process::Process;

use super::{ProcessInfo, table::Login};
use crate::events::FileId;
use crate::limits::{self, ARGV_MAX_BYTES, COMM_MAX_BYTES};

/// Reads one process; `None` when it is gone or unreadable.
pub fn read(pid: u32) -> Option<ProcessInfo> {
    let proc = Process::new(pid as i32).ok()?;
    from_process(&proc)
}

/// Reads every process in `/proc`, skipping those that vanish meanwhile.
pub fn read_all() -> Vec<ProcessInfo> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(Result::ok)
        .filter_map(|p| from_process(&p))
        .collect()
}

/// The arguments of `pid`, at most [`ARGV_MAX_BYTES`] of them, and whether
/// there were more.
pub fn argv(pid: u32) -> (Vec<String>, bool) {
    let mut block = Vec::with_capacity(ARGV_MAX_BYTES + 1);
    let read = std::fs::File::open(format!("/proc/{pid}/cmdline")).and_then(|f| {
        // One byte past the cap tells whether anything was left out.
        f.take(ARGV_MAX_BYTES as u64 + 1).read_to_end(&mut block)
    });
    match read {
        Ok(_) => limits::split_argv(&block),
        Err(_) => (Vec::new(), false),
    }
}

/// Identity of the executable `pid` runs: `/proc/PID/exe` leads to the
/// file itself, even when it was deleted or started by another name.
fn exe_id(pid: i32) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some(FileId {
        dev: crate::fsio::encode_dev(meta.dev()),
        ino: meta.ino(),
    })
}

fn from_process(proc: &Process) -> Option<ProcessInfo> {
    let stat = proc.stat().ok()?;
    let status = proc.status().ok();
    let ticks = procfs::ticks_per_second().max(1);
    let mut comm = stat.comm.clone();
    limits::truncate(&mut comm, COMM_MAX_BYTES);
    let (argv, argv_truncated) = argv(stat.pid as u32);
    Some(ProcessInfo {
        pid: stat.pid as u32,
        ppid: stat.ppid as u32,
        uid: status.as_ref().map(|s| s.ruid).unwrap_or(0),
        gid: status.as_ref().map(|s| s.rgid).unwrap_or(0),
        comm,
        exe: proc.exe().ok().map(|p| p.to_string_lossy().into_owned()),
        exe_id: exe_id(stat.pid),
        // Read through the agent's own view of /proc: a path there.
        exe_foreign: false,
        argv,
        argv_truncated,
        start_ktime_ns: Some(stat.starttime * 1_000_000_000 / ticks),
        login: login(stat.pid as u32).unwrap_or_default(),
    })
}

/// The login user id and audit session of `pid`; `None` when it is gone.
/// `4294967295` is the kernel's "unset" for both.
pub fn login(pid: u32) -> Option<Login> {
    let uid = login_value(pid, "loginuid")?;
    // The kernel assigns the session when the login uid is written.
    let session = match uid {
        Some(_) => login_value(pid, "sessionid")?,
        None => None,
    };
    Some(Login { uid, session })
}

/// `/proc/PID/WHAT` as a number, `None` inside when unset; into a stack
/// buffer, as this runs on every exec of a process without a login.
fn login_value(pid: u32, what: &str) -> Option<Option<u32>> {
    let mut buf = [0u8; 16];
    let n = std::fs::File::open(format!("/proc/{pid}/{what}"))
        .and_then(|mut f| f.read(&mut buf))
        .ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    Some(text.trim().parse().ok().filter(|&v: &u32| v != u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_command_line_is_read_only_up_to_the_cap() {
        // 16 × 64 KiB: far past the cap, well inside the default ARG_MAX.
        let arg = "a".repeat(64 << 10);
        // `read` is a builtin: the shell itself waits, with this command line.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read -r line", "reflex-test"])
            .args(std::iter::repeat_n(&arg, 16))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Until the exec, the child is a copy of this test with its argv.
        let mut info = None;
        for _ in 0..500 {
            info = read(child.id()).filter(|i| i.argv.first().is_some_and(|a| a == "sh"));
            if info.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(child.stdin.take());
        child.wait().unwrap();
        let info = info.expect("the child is readable");
        assert!(info.argv_truncated);
        let kept: usize = info.argv.iter().map(|a| a.len() + 1).sum();
        assert!(kept <= ARGV_MAX_BYTES + 1, "{kept} bytes kept");
        assert_eq!(info.argv[..3], ["sh", "-c", "read -r line"]);
    }
}
