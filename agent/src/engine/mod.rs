//! The reactor: records from the sensor are evaluated against the current
//! policy set and answered by the executor. A new set is swapped in between
//! two records, so no event is lost or judged by half a set. File events go
//! through the file sensor's settling first (see `files`).
pub mod reload;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};

use crate::{
    actions::Executor,
    cpu::{CpuMonitor, CpuSampler},
    events::{Body, Record, clock::BootClock},
    files::Files,
    net::BlockTable,
    policy::PolicySet,
};

/// The CPU sensor as the engine drives it.
pub struct CpuSensor {
    /// Counter reader.
    pub sampler: CpuSampler,
    /// Episode state.
    pub monitor: CpuMonitor,
    /// How often to read.
    pub interval: Duration,
}

/// Evaluates every record until the channel closes. `initial` are records
/// to answer first (drift found while configuring the file sensor).
pub async fn evaluate(
    mut records: mpsc::Receiver<Record>,
    mut policies: watch::Receiver<Arc<PolicySet>>,
    mut executor: Executor,
    mut files: Option<Files>,
    mut cpu: Option<CpuSensor>,
    mut blocks: Option<BlockTable>,
    initial: Vec<Record>,
) {
    let mut set = policies.borrow_and_update().clone();
    let mut tick = tokio::time::interval(
        cpu.as_ref()
            .map_or(Duration::from_secs(3600), |c| c.interval),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let clock = BootClock::new();
    for record in &initial {
        answer(&set, &mut executor, files.as_mut(), record);
    }
    loop {
        let deadline = files.as_ref().and_then(Files::next_deadline);
        let record = tokio::select! {
            record = records.recv() => match record {
                Some(record) => Some(record),
                None => return,
            },
            () = sleep_until(deadline) => None,
            Ok(()) = policies.changed() => None,
            _ = tick.tick(), if cpu.is_some() => {
                if let Some(cpu) = cpu.as_mut() {
                    match cpu.sampler.sample() {
                        Ok(sample) => {
                            let now_ns = BootClock::now_ns();
                            let time = humantime::format_rfc3339_nanos(clock.to_system_time(now_ns)).to_string();
                            for record in cpu.monitor.observe(&sample, &set, now_ns, &time) {
                                answer(&set, &mut executor, files.as_mut(), &record);
                            }
                        }
                        Err(err) => tracing::warn!(%err, "reading the CPU counters"),
                    }
                }
                None
            }
        };
        if policies.has_changed().unwrap_or(false) || !Arc::ptr_eq(&set, &policies.borrow()) {
            set = policies.borrow_and_update().clone();
            executor.reset_fuses();
            if let Some(blocks) = blocks.as_mut() {
                let rules = blocks.configure(&set);
                tracing::info!(rules, "block rules in force");
            }
            if let Some(files) = files.as_mut() {
                for drift in files.configure(&set) {
                    answer(&set, &mut executor, Some(files), &drift);
                }
            }
        }
        let now = Instant::now();
        let Some(files) = files.as_mut() else {
            if let Some(record) = record {
                answer(&set, &mut executor, None, &record);
            }
            continue;
        };
        let settled = match record {
            Some(record) if matches!(record.body, Body::File(_)) => files.ingest(record, now),
            Some(record) => {
                let mut settled = match record.body {
                    Body::Exit(_) => files.process_exited(record.process.pid, now),
                    _ => files.expire(now),
                };
                answer(&set, &mut executor, Some(files), &record);
                std::mem::take(&mut settled)
            }
            None => files.expire(now),
        };
        for record in settled {
            answer(&set, &mut executor, Some(files), &record);
        }
    }
}

fn answer(set: &PolicySet, executor: &mut Executor, files: Option<&mut Files>, record: &Record) {
    let matched = set.evaluate(record);
    executor.handle(record, &matched, files);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
