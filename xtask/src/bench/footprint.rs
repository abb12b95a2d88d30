//! B5: RSS and CPU of the idle agent with 10 and 10000 policies.
use std::{fs, time::Duration};

use anyhow::Result;
use serde::Serialize;

use super::{Agent, Bench, proc::process_cpu_seconds, step, write_policy};

#[derive(Serialize)]
pub(super) struct Footprint {
    pub(super) policies: usize,
    pub(super) seconds: u64,
    /// At the end of the idle period.
    pub(super) rss_mib: f64,
    /// The highest since start (start-up parses kernel BTF).
    pub(super) peak_rss_mib: f64,
    pub(super) cpu_percent_of_one_core: f64,
}

pub(super) fn measure(bench: &Bench) -> Result<Vec<Footprint>> {
    step(format_args!(
        "B5 idle footprint with 10 and 10 000 policies"
    ));
    let mut footprint = Vec::new();
    for n in [10usize, 10_000] {
        footprint.push(idle(bench, n, if bench.quick { 10 } else { 60 })?);
    }
    Ok(footprint)
}

/// The agent with `n` exec policies that match nothing, idle for `seconds`.
fn idle(bench: &Bench, n: usize, seconds: u64) -> Result<Footprint> {
    let work = bench.work;
    let dir = work.join(format!("footprint-{n}"));
    fs::create_dir_all(&dir)?;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "---\nname: idle-{i}\nmode: monitor\non:\n  exec: {{ paths: [\"/opt/none{i}/bin/*\"] }}\ndo: [alert]\n"
        ));
    }
    write_policy(&dir.join("policies.yaml"), &text)?;
    let agent = Agent::start(
        bench.bin,
        &dir,
        &work.join(format!("footprint-state-{n}")),
        1,
    )?;
    let pid = agent.pid();
    std::thread::sleep(Duration::from_secs(1));
    let cpu0 = process_cpu_seconds(pid)?;
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu1 = process_cpu_seconds(pid)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (rss_kib, peak_kib) = (kib("VmRSS:"), kib("VmHWM:"));
    agent.stop()?;
    Ok(Footprint {
        policies: n,
        seconds,
        rss_mib: rss_kib / 1024.0,
        peak_rss_mib: peak_kib / 1024.0,
        cpu_percent_of_one_core: (cpu1 - cpu0) / seconds as f64 * 100.0,
    })
}
