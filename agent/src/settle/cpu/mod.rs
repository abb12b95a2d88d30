//! The settler's CPU half: per-interval percentages from the kernel's
//! sample counters (`sampler`) and threshold episodes (`monitor`).
pub mod monitor;
pub mod sampler;

use std::time::Duration;

pub use monitor::CpuMonitor;
pub use sampler::{CpuSample, CpuSampler};

use crate::{
    events::{Record, clock::BootClock},
    loader::CpuMaps,
    policy::PolicySet,
};

/// Counters, thresholds and how often they are read.
pub struct CpuSettler {
    sampler: CpuSampler,
    monitor: CpuMonitor,
    interval: Duration,
    clock: BootClock,
}

impl CpuSettler {
    /// Reads `sampler` every `interval`.
    pub fn new(sampler: CpuSampler, interval: Duration) -> Self {
        Self {
            sampler,
            monitor: CpuMonitor::default(),
            interval,
            clock: BootClock::new(),
        }
    }

    /// Reads the kernel's counters `maps`, sampled at `hz` on every online
    /// CPU, every `interval`.
    pub fn start(maps: CpuMaps, hz: u64, interval: Duration) -> Self {
        let cpus = aya::util::online_cpus().map(|c| c.len()).unwrap_or(1);
        Self::new(CpuSampler::new(maps, hz, cpus), interval)
    }

    /// How often [`CpuSettler::tick`] is due.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reads the counters now and returns the `cpu_high` and `cpu_normal`
    /// events the `cpu` policies of `set` fire.
    pub fn tick(&mut self, set: &PolicySet) -> Vec<Record> {
        match self.sampler.sample() {
            Ok(sample) => {
                let now_ns = BootClock::now_ns();
                let time =
                    humantime::format_rfc3339_nanos(self.clock.to_system_time(now_ns)).to_string();
                self.monitor.observe(&sample, set, now_ns, &time)
            }
            Err(err) => {
                tracing::warn!(%err, "reading the CPU counters");
                Vec::new()
            }
        }
    }
}
