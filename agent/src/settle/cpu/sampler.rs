//! Turning the kernel's cumulative CPU sample counters into percentages.
use std::{collections::HashMap, time::Instant};

use aya::maps::MapError;

use crate::loader::CpuMaps;

/// One interval's measurements.
#[derive(Clone, Debug, Default)]
pub struct CpuSample {
    /// Percent of one core, per process (tgid), for processes that ran.
    pub processes: HashMap<u32, f64>,
    /// Percent of all cores for the whole host.
    pub host: f64,
}

/// Reads the counters and remembers the previous reading.
pub struct CpuSampler {
    maps: CpuMaps,
    hz: u64,
    cpus: usize,
    last: HashMap<u32, u64>,
    last_busy: u64,
    last_at: Instant,
    idle_reads: HashMap<u32, u32>,
}

/// Reads after which a process with no new samples is dropped from the map.
const FORGET_AFTER: u32 = 5;

impl CpuSampler {
    /// A sampler over `maps`, sampled at `hz` on `cpus` CPUs.
    pub fn new(maps: CpuMaps, hz: u64, cpus: usize) -> Self {
        let mut sampler = Self {
            maps,
            hz,
            cpus: cpus.max(1),
            last: HashMap::new(),
            last_busy: 0,
            last_at: Instant::now(),
            idle_reads: HashMap::new(),
        };
        // Start from the counters as they are now.
        let _ = sampler.sample();
        sampler
    }

    /// Percentages since the previous call.
    pub fn sample(&mut self) -> Result<CpuSample, MapError> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        self.last_at = now;
        let per_core = self.hz as f64 * elapsed / 100.0;

        let mut processes = HashMap::new();
        let mut seen = Vec::new();
        for entry in self.maps.samples.iter() {
            let (tgid, per_cpu) = entry?;
            let total: u64 = per_cpu.iter().sum();
            let before = self.last.insert(tgid, total).unwrap_or(0);
            let delta = total.saturating_sub(before);
            seen.push(tgid);
            if delta > 0 {
                self.idle_reads.remove(&tgid);
                processes.insert(tgid, delta as f64 / per_core);
            } else {
                *self.idle_reads.entry(tgid).or_default() += 1;
            }
        }
        // Forget processes that stopped running (most have exited), after
        // their last samples were counted.
        for tgid in seen {
            if self
                .idle_reads
                .get(&tgid)
                .is_some_and(|&n| n >= FORGET_AFTER)
                && !std::path::Path::new(&format!("/proc/{tgid}")).exists()
            {
                let _ = self.maps.samples.remove(&tgid);
                self.last.remove(&tgid);
                self.idle_reads.remove(&tgid);
            }
        }
        let busy: u64 = self
            .maps
            .host
            .get(&reflex_wire::cpu::HOST_BUSY, 0)?
            .iter()
            .sum();
        let delta_busy = busy.saturating_sub(self.last_busy);
        self.last_busy = busy;
        let host = (delta_busy as f64 / (per_core * self.cpus as f64)).min(100.0);
        Ok(CpuSample { processes, host })
    }
}
