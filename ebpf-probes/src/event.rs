//! Building the common [`EventHeader`] of every record.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    bpf_ktime_get_boot_ns, generated::bpf_get_current_comm,
};
use reflex_wire::{COMM_LEN, EventHeader, EventKind};

use crate::task;

/// The header for an event of `kind` and `size` bytes about the current task.
#[inline(always)]
pub fn header(kind: EventKind, size: usize) -> EventHeader {
    let mut h = header_without_parent(kind, size);
    h.ppid = task::parent_tgid(task::current()).unwrap_or(0);
    h
}

/// As [`header`] but with `ppid` 0, for program types that may not read the
/// task (cgroup hooks); the agent fills the parent from its process table.
#[inline(always)]
pub fn header_without_parent(kind: EventKind, size: usize) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    EventHeader {
        kind: kind as u32,
        size: size as u32,
        // SAFETY: these helpers take no pointers and cannot fault.
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        ppid: 0,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        _pad: 0,
        // SAFETY: as above.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: current_comm(),
    }
}

/// The current task's `comm`. The buffer starts uninitialised because a
/// zeroed array becomes a `memset` call, which the BPF target cannot emit;
/// the helper fills all of it, with zeroes on failure.
#[inline(always)]
fn current_comm() -> [u8; COMM_LEN] {
    let mut comm = MaybeUninit::<[u8; COMM_LEN]>::uninit();
    // SAFETY: `comm` is COMM_LEN writable bytes, the size passed to the
    // helper, which writes every one of them whether it succeeds or not.
    unsafe {
        bpf_get_current_comm(comm.as_mut_ptr().cast(), COMM_LEN as u32);
        comm.assume_init()
    }
}
