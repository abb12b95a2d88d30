//! Maps shared by every probe family.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use reflex_wire::{KernelOffsets, LossReason};

/// All events, every family, in one ring buffer. The agent may resize it at load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Events the kernel side could not deliver, per CPU, indexed by [`LossReason`].
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LossReason::COUNT, 0);

/// Kernel struct offsets resolved by the agent from BTF before load.
#[unsafe(no_mangle)]
pub static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    task_real_parent: 0,
    task_tgid: 0,
    task_exit_code: 0,
    task_mm: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    tp_exec_filename: 0,
    tp_exit_group_dead: 0,
    tp_fork_child_pid: 0,
    _pad: 0,
});

/// Tasks whose events are not reported: the agent itself and, through
/// `sched_process_fork`, everything it starts (its hooks). Keyed by task id;
/// entries leave when the task exits.
#[map]
pub static EXCLUDED: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// Whether the task group `tgid` is excluded from reporting.
#[inline(always)]
pub fn is_excluded(tgid: u32) -> bool {
    EXCLUDED.get_ptr(tgid).is_some()
}

/// Counts one lost event.
#[inline(always)]
pub fn count_loss(reason: LossReason) {
    if let Some(slot) = LOST.get_ptr_mut(reason as u32) {
        // SAFETY: the pointer comes from a successful per-CPU map lookup, so it
        // is valid and only this CPU touches it while the program runs.
        unsafe { *slot += 1 };
    }
}
