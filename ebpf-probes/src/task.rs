//! Reads of the current `task_struct` at the offsets the agent resolved from BTF.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel};

use crate::maps::OFFSETS;

/// Address of the current task's `task_struct`.
#[inline(always)]
pub fn current() -> u64 {
    // SAFETY: the helper takes no arguments and returns the current task pointer.
    unsafe { bpf_get_current_task() }
}

/// The current (thread id, process id).
#[inline(always)]
pub fn ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    (id as u32, (id >> 32) as u32)
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly on a bad one.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.map_err(|e| e as i64)
}

/// Process id (tgid) of the task's real parent.
#[inline(always)]
pub fn parent_tgid(task: u64) -> Result<u32, i64> {
    let offsets = OFFSETS.load();
    let parent: u64 = read(task, offsets.task_real_parent)?;
    read::<u32>(parent, offsets.task_tgid)
}

/// The `struct file` behind descriptor `fd` of the current task.
#[inline(always)]
pub fn fd_file(fd: u64) -> Option<u64> {
    let off = OFFSETS.load();
    let files: u64 = read(current(), off.task_files).ok()?;
    let fdt: u64 = read(files, off.files_fdt).ok()?;
    let max: u32 = read(fdt, off.fdtable_max_fds).ok()?;
    if fd >= max as u64 {
        return None;
    }
    let table: u64 = read(fdt, off.fdtable_fd).ok()?;
    let file: u64 = read(table, (fd * 8) as u32).ok()?;
    (file != 0).then_some(file)
}

/// Device and inode of an inode pointer: the identity the agent's watch and
/// kill maps are keyed by.
#[inline(always)]
pub fn inode_key(inode: u64) -> Option<reflex_wire::FileKey> {
    let off = OFFSETS.load();
    let ino: u64 = read(inode, off.inode_ino).ok()?;
    let sb: u64 = read(inode, off.inode_sb).ok()?;
    let dev: u32 = read(sb, off.sb_dev).ok()?;
    Some(reflex_wire::FileKey { dev, _pad: 0, ino })
}
