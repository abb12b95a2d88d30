//! B3: file events offered at doubling rates to a monitor policy until any
//! is lost; the agent's own counters say what was delivered and lost.
use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde::Serialize;

use super::{Agent, Bench, proc::process_cpu_seconds, step, write_policy};

#[derive(Serialize)]
pub(super) struct Throughput {
    /// (offered events/s, delivered events/s, lost) per round.
    pub(super) rounds: Vec<(f64, f64, u64)>,
    pub(super) highest_rate_without_loss: f64,
    pub(super) agent_cpu_us_per_event: f64,
}

pub(super) fn measure(bench: &Bench) -> Result<Option<Throughput>> {
    step(format_args!(
        "B3 throughput, offered load doubled until anything is lost"
    ));
    let work = bench.work;
    let dir = work.join("throughput");
    fs::create_dir_all(&dir)?;
    let policies = work.join("throughput-policies");
    fs::create_dir_all(&policies)?;
    write_policy(
        &policies.join("all.yaml"),
        &format!(
            "name: every-write\nmode: monitor\non:\n  file: {{ paths: [\"{}/*\"] }}\ndo: [alert]\nthrottle: {{ per: policy, max: 1, every: 1h }}\n",
            dir.display()
        ),
    )?;
    let files: Vec<PathBuf> = (0..64).map(|i| dir.join(format!("t{i}"))).collect();
    for f in &files {
        fs::write(f, "x")?;
    }
    let agent = Agent::start(bench.bin, &policies, &work.join("throughput-state"), 1)?;
    let pid = agent.pid();
    let mut rounds = Vec::new();
    let mut best = 0.0;
    let mut rate = 5_000.0;
    let mut cpu_per_event = 0.0;
    let max_rounds = if bench.quick { 6 } else { 9 };
    for _ in 0..max_rounds {
        let (events0, lost0) = agent.counters()?;
        let cpu0 = process_cpu_seconds(pid)?;
        let offered = offer(&files, rate, Duration::from_secs(1))?;
        std::thread::sleep(Duration::from_millis(500));
        let (events1, lost1) = agent.counters()?;
        let cpu1 = process_cpu_seconds(pid)?;
        let delivered = events1 - events0;
        let lost = lost1 - lost0;
        rounds.push((offered, delivered as f64, lost));
        if delivered > 0 {
            cpu_per_event = (cpu1 - cpu0) * 1e6 / delivered as f64;
        }
        if lost > 0 || (delivered as f64) < offered * 0.95 {
            break;
        }
        best = offered;
        rate *= 2.0;
    }
    agent.stop()?;
    Ok(Some(Throughput {
        rounds,
        highest_rate_without_loss: best,
        agent_cpu_us_per_event: cpu_per_event,
    }))
}

/// Opens for writing and closes files at `rate` events per second (each
/// open and each close is one event) for `span`; returns the rate achieved.
fn offer(files: &[PathBuf], rate: f64, span: Duration) -> Result<f64> {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < span {
        let due = (start.elapsed().as_secs_f64() * rate / 2.0) as u64;
        while done < due {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&files[done as usize % files.len()])?;
            drop(f);
            done += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(done as f64 * 2.0 / start.elapsed().as_secs_f64())
}
