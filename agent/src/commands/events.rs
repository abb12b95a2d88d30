//! `reflex events`: every event as one JSON object per line on stdout.
use std::{
    collections::HashSet,
    io::{self, Write as _},
    process::ExitCode,
};

use anyhow::Context as _;

use crate::{
    events::EventKindName,
    sensor::{Sensor, SensorOptions},
    telemetry::Metrics,
};

/// Streams events of `kinds` (all when empty) until SIGINT/SIGTERM or until
/// stdout is closed.
pub async fn events(kinds: &[EventKindName]) -> anyhow::Result<ExitCode> {
    let options = SensorOptions {
        kinds: (!kinds.is_empty()).then(|| kinds.iter().copied().collect::<HashSet<_>>()),
        ..SensorOptions::default()
    };
    let mut shutdown = super::shutdown::Shutdown::install()?;
    let (sensor, mut records) =
        Sensor::start(options, Metrics::new()).context("starting the event sensor")?;
    tracing::info!(probes = ?sensor.attached(), "streaming events");
    let mut out = io::BufWriter::new(io::stdout().lock());
    loop {
        tokio::select! {
            signal = shutdown.wait() => {
                tracing::info!(signal, "stopping");
                break;
            }
            record = records.recv() => {
                let Some(record) = record else { break };
                serde_json::to_writer(&mut out, &record).context("encoding an event")?;
                out.write_all(b"\n").context("writing to stdout")?;
                // Flush per batch: lines must reach a pipe reader promptly.
                if records.is_empty() {
                    match out.flush() {
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
                        other => other.context("writing to stdout")?,
                    }
                }
            }
        }
    }
    let _ = out.flush();
    drop(sensor);
    Ok(ExitCode::SUCCESS)
}
