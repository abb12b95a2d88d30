//! CPU family: a `perf_event` program on the software CPU clock of every
//! CPU counts samples per process and for the host. The agent reads the
//! counters each interval; nothing is sent through the ring buffer.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, perf_event},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::PerfEventContext,
};

/// Samples per process (tgid), per CPU, cumulative.
#[map]
static CPU_SAMPLES: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(16_384, 0);

/// Per CPU: `[0]` samples that found a task running, `[1]` all samples.
#[map]
static CPU_HOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// `perf_event` (software CPU clock, one per CPU, `HZ` samples a second):
/// counts the sample against the running process, or as idle.
#[perf_event]
pub fn cpu_sample(_ctx: PerfEventContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    bump(1);
    if id as u32 != 0 {
        bump(0);
        let tgid = (id >> 32) as u32;
        match CPU_SAMPLES.get_ptr_mut(tgid) {
            // SAFETY: a per-CPU value of this map, touched by this CPU only.
            Some(count) => unsafe { *count += 1 },
            None => {
                let _ = CPU_SAMPLES.insert(tgid, 1, 0);
            }
        }
    }
    0
}

#[inline(always)]
fn bump(slot: u32) {
    if let Some(count) = CPU_HOST.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *count += 1 };
    }
}
