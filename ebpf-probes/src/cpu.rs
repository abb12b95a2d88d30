//! CPU family: a `perf_event` program on the software CPU clock of every
//! CPU counts samples per process and for the host. The agent reads the
//! counters each interval; nothing is sent through the ring buffer.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, perf_event},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::PerfEventContext,
};
use reflex_wire::{
    cpu::{HOST_ALL, HOST_BUSY, HOST_SLOTS},
    maps, programs,
};

/// Samples per process (tgid), per CPU, cumulative.
#[map]
static CPU_SAMPLES: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(16_384, 0);
exported_as!(CPU_SAMPLES, maps::CPU_SAMPLES);

/// Per CPU: samples that found a task running ([`HOST_BUSY`]) and all
/// samples ([`HOST_ALL`]).
#[map]
static CPU_HOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(HOST_SLOTS, 0);
exported_as!(CPU_HOST, maps::CPU_HOST);

/// `perf_event` (software CPU clock, one per CPU, `HZ` samples a second):
/// counts the sample against the running process, or as idle.
#[perf_event]
pub fn cpu_sample(_ctx: PerfEventContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    bump(HOST_ALL);
    if id as u32 != 0 {
        bump(HOST_BUSY);
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
exported_as!(cpu_sample, programs::CPU_SAMPLE);

/// Counts one sample in `slot` of this CPU's [`CPU_HOST`].
#[inline(always)]
fn bump(slot: u32) {
    if let Some(count) = CPU_HOST.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *count += 1 };
    }
}
