//! B7: host CPU while the idle agent samples CPUs at 99 and 999 Hz, over
//! the same agent with the CPU sensor off.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde::Serialize;

use super::{
    Agent, Bench,
    proc::{host_busy_jiffies, ticks_per_second},
    report::{Spread, spread},
    step,
};

#[derive(Serialize)]
pub(super) struct SamplingCost {
    pub(super) hz: u64,
    /// Host CPU while the idle agent runs, in percent of one core.
    pub(super) host_busy_percent_of_one_core: Spread,
    /// The same minus the agent without the CPU sensor.
    pub(super) cost_percent_of_one_core: f64,
}

pub(super) fn measure(bench: &Bench, policies: &Path) -> Result<Vec<SamplingCost>> {
    step(format_args!(
        "B7 CPU sampling cost at 0 (sensor off), 99 and 999 Hz"
    ));
    let mut sampling: Vec<(u64, Spread)> = Vec::new();
    for hz in [0u64, 99, 999] {
        let mut busy = Vec::new();
        for _ in 0..bench.plan.runs.min(3) {
            let agent = Agent::start_with(
                bench.bin,
                policies,
                &bench.work.join("state"),
                1,
                &["--cpu-hz", &hz.to_string()],
            )?;
            std::thread::sleep(Duration::from_secs(1));
            let before = host_busy_jiffies()?;
            let t = Instant::now();
            std::thread::sleep(Duration::from_secs(if bench.quick { 3 } else { 10 }));
            let after = host_busy_jiffies()?;
            let secs = t.elapsed().as_secs_f64();
            agent.stop()?;
            let ticks = ticks_per_second();
            busy.push((after - before) as f64 / ticks / secs * 100.0);
        }
        sampling.push((hz, spread(busy)));
    }
    let off = sampling[0].1.median;
    Ok(sampling
        .into_iter()
        .map(|(hz, busy)| SamplingCost {
            hz,
            cost_percent_of_one_core: busy.median - off,
            host_busy_percent_of_one_core: busy,
        })
        .collect())
}
