//! B2: write to a watched file → content restored, for reflex and for an
//! inotifywait restorer measured the same way; and write → event
//! delivered, for reflex (its alert log) and auditd (its log).
use std::{
    fs,
    io::Read as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::{
    Agent, Bench, Fixture, pin,
    report::{Percentiles, percentiles},
    step, write_policy,
};
use crate::peers;

/// Restore latencies in microseconds, one per change.
pub(super) struct Restores {
    pub(super) reflex: Vec<f64>,
    /// `None` when inotifywait is not installed.
    pub(super) inotify: Option<Vec<f64>>,
}

/// Write → restored, by reflex's revert policy and by the inotify restorer.
pub(super) fn measure(bench: &Bench, fixture: &Fixture) -> Result<Restores> {
    let (work, reverts) = (bench.work, bench.plan.reverts);
    eprintln!("bench: B2 write to a watched file -> restored, {reverts} changes");
    pin(0)?;
    let agent = Agent::start(
        bench.bin,
        &fixture.policies,
        &work.join("state"),
        bench.peer_cpu,
    )?;
    let latencies = restore_latencies(&fixture.target, reverts, Duration::from_secs(5));
    agent.stop()?;
    let reflex = latencies?;

    let inotify = if peers::available("inotifywait") {
        step(format_args!("B2 peer inotify restorer"));
        let baseline = work.join("inotify-baseline");
        let victim = work.join("inotify-target.conf");
        fs::write(&baseline, "good content\n")?;
        fs::write(&victim, "good content\n")?;
        let peer = peers::Peer::inotify_restorer(&victim, &baseline, bench.peer_cpu)?;
        let result = restore_latencies(&victim, reverts, Duration::from_secs(5));
        peer.stop()?;
        Some(result?)
    } else {
        None
    };
    Ok(Restores { reflex, inotify })
}

/// Write → event delivered: reflex's alert log, and auditd's log when it
/// is installed.
pub(super) fn delivery(bench: &Bench) -> Result<Vec<(String, Percentiles)>> {
    step(format_args!(
        "B2 write -> event delivered (reflex alert log, auditd log)"
    ));
    let mut delivery = Vec::new();
    let samples = if bench.quick { 200 } else { 1000 };
    delivery.push((
        "reflex".to_string(),
        percentiles(reflex_delivery(bench, samples)?),
    ));
    if peers::available("auditd") && peers::available("auditctl") {
        delivery.push((
            "auditd".to_string(),
            percentiles(auditd_delivery(bench.work, samples, bench.peer_cpu)?),
        ));
    }
    Ok(delivery)
}

/// Microseconds from writing `target` to seeing its good content back, `n`
/// times, each within `limit`.
pub(super) fn restore_latencies(target: &Path, n: usize, limit: Duration) -> Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        fs::write(target, format!("tampered {i}\n"))?;
        let written = Instant::now();
        let deadline = written + limit;
        let mut buf = Vec::with_capacity(64);
        loop {
            buf.clear();
            if fs::File::open(target)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .is_ok()
                && buf == b"good content\n"
            {
                latencies.push(written.elapsed().as_secs_f64() * 1e6);
                break;
            }
            if Instant::now() > deadline {
                bail!("change {i} was not restored within {limit:?}");
            }
            std::hint::spin_loop();
        }
    }
    Ok(latencies)
}

/// Microseconds from a write to `file` until `log` grows, `n` times.
fn log_growth_latencies(file: &Path, log: &Path, n: usize) -> Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let before = fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        fs::write(file, format!("change {i}\n"))?;
        let written = Instant::now();
        let deadline = written + Duration::from_secs(5);
        loop {
            if fs::metadata(log).map(|m| m.len()).unwrap_or(0) > before {
                latencies.push(written.elapsed().as_secs_f64() * 1e6);
                break;
            }
            if Instant::now() > deadline {
                bail!("change {i} was not logged within 5 s");
            }
            std::hint::spin_loop();
        }
        // Let the writer's events settle before the next change.
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(latencies)
}

/// Write → reflex's alert for it appears in STATE/alerts.jsonl.
fn reflex_delivery(bench: &Bench, n: usize) -> Result<Vec<f64>> {
    let dir = bench.work.join("delivery");
    fs::create_dir_all(dir.join("policies"))?;
    let file = dir.join("watched.conf");
    fs::write(&file, "x\n")?;
    write_policy(
        &dir.join("policies/watch.yaml"),
        &format!(
            "name: delivery\nmode: monitor\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [alert]\n",
            file.display()
        ),
    )?;
    let state = dir.join("state");
    let agent = Agent::start(bench.bin, &dir.join("policies"), &state, bench.peer_cpu)?;
    let result = log_growth_latencies(&file, &state.join("alerts.jsonl"), n);
    agent.stop()?;
    result
}

/// Write → auditd's record for it appears in its log.
fn auditd_delivery(work: &Path, n: usize, cpu: usize) -> Result<Vec<f64>> {
    let file = work.join("audited.conf");
    fs::write(&file, "x\n")?;
    let peer = peers::Peer::auditd(std::slice::from_ref(&file), work, cpu)?;
    let result = log_growth_latencies(&file, Path::new("/var/log/audit/audit.log"), n);
    peer.stop()?;
    result
}
