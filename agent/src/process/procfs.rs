//! Reading a process's identity from `/proc`, for start-up seeding and for
//! processes the table has not seen exec.
use procfs::process::Process;

use super::ProcessInfo;
use crate::events::FileId;

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
    Some(ProcessInfo {
        pid: stat.pid as u32,
        ppid: stat.ppid as u32,
        uid: status.as_ref().map(|s| s.ruid).unwrap_or(0),
        gid: status.as_ref().map(|s| s.rgid).unwrap_or(0),
        comm: stat.comm.clone(),
        exe: proc.exe().ok().map(|p| p.to_string_lossy().into_owned()),
        exe_id: exe_id(stat.pid),
        argv: proc.cmdline().unwrap_or_default(),
        start_ktime_ns: Some(stat.starttime * 1_000_000_000 / ticks),
    })
}
