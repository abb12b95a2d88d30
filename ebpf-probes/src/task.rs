//! Reads of the current `task_struct` at the offsets the agent resolved from BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

use crate::maps::OFFSETS;

/// Address of the current task's `task_struct`.
#[inline(always)]
pub fn current() -> u64 {
    // SAFETY: the helper takes no arguments and returns the current task pointer.
    unsafe { bpf_get_current_task() }
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
