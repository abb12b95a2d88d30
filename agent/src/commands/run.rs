//! `reflex run`: the daemon.
use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, bail};

use crate::{
    sensor::{Sensor, SensorOptions},
    telemetry::Metrics,
};

/// Loads the probes and consumes events until SIGINT/SIGTERM, then detaches
/// everything and returns success.
pub async fn run(policies: &Path) -> anyhow::Result<ExitCode> {
    if !policies.is_dir() {
        bail!("policy directory {} does not exist", policies.display());
    }
    let metrics = Metrics::new();
    let (sensor, mut records) =
        Sensor::start(SensorOptions::default(), metrics.clone()).context("starting the sensor")?;
    for probe in sensor.attached() {
        tracing::info!(probe = %probe, "attached");
    }
    tracing::info!(policies = %policies.display(), pid = std::process::id(), "reflex running");
    let stop = super::shutdown::signalled();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            signal = &mut stop => {
                tracing::info!(signal = signal?, "shutting down");
                break;
            }
            record = records.recv() => {
                let Some(record) = record else { break };
                tracing::trace!(kind = record.kind.as_str(), pid = record.process.pid, "event");
            }
        }
    }
    drop(sensor);
    tracing::info!("probes detached");
    Ok(ExitCode::SUCCESS)
}
