//! `reflex events`: every finished event as one JSON object per line (or
//! one human line, `-o compact`) on stdout, from the same sensor and
//! settler as `reflex run`.
use std::{
    io::{self, Write as _},
    path::Path,
    process::ExitCode,
    sync::Arc,
};

use anyhow::{Context as _, bail};
use tokio::sync::{mpsc, watch};

use super::compact;
use crate::cli::EventFormat;
use crate::{
    engine::reload,
    events::Kind,
    lanes::Lane,
    policy::PolicySet,
    sensor::{Sensor, SensorOptions},
    settle::{Settled, Settler, cpu::CpuSettler, file::FileSettler},
    telemetry::Metrics,
};

/// Settings of `reflex events`.
#[derive(Clone, Debug, Default)]
pub struct EventsOptions {
    /// Only these kinds; all when empty.
    pub kinds: Vec<Kind>,
    /// Policies whose watch list and CPU thresholds the settler uses: file
    /// events need watched files, `cpu_high`/`cpu_normal` need `cpu` policies.
    pub policies: Option<std::path::PathBuf>,
    /// CPU sampling frequency when `cpu` policies are given.
    pub cpu_hz: u64,
    /// How often CPU use is computed.
    pub cpu_interval: std::time::Duration,
    /// JSON lines or human lines.
    pub format: EventFormat,
}

/// Streams events until SIGINT/SIGTERM or until stdout is closed.
pub async fn events(options: &EventsOptions) -> anyhow::Result<ExitCode> {
    let set = match &options.policies {
        Some(dir) => load(dir)?,
        None => PolicySet::default(),
    };
    let set = Arc::new(set);
    let has_cpu = set.policies().iter().any(|p| p.trigger.family() == "cpu");
    let cpu_hz = (has_cpu && options.cpu_hz > 0).then_some(options.cpu_hz);
    let mut sensor_options = SensorOptions::default();
    sensor_options.load.cpu_hz = cpu_hz;
    sensor_options.load.watch_room =
        crate::settle::file::watch::capacity::room(&set, Default::default());
    let mut shutdown = super::shutdown::Shutdown::install()?;
    let (mut sensor, records) =
        Sensor::start(sensor_options, Metrics::new()).context("starting the event sensor")?;
    let cpu = match cpu_hz {
        Some(hz) => Some(CpuSettler::start(
            sensor.take_cpu_maps()?,
            hz,
            options.cpu_interval,
        )),
        None => None,
    };
    // Reporting only: no baselines are read or recorded.
    let files =
        FileSettler::new(Some(sensor.take_watch_maps()?), None).with_marks(sensor.file_marks());
    let (settler, drift) = Settler::new(files, cpu, set.clone());
    let (_set_tx, set_rx) = watch::channel(set);
    let (_followup_tx, followup_rx) = mpsc::unbounded_channel();
    let (settled_tx, mut settled) = crate::lanes::channel(
        crate::lanes::DEFAULT_STAGE_QUEUE,
        crate::lanes::DEFAULT_STAGE_QUEUE,
    );
    let settling = tokio::spawn(settler.run(drift, records, set_rx, followup_rx, settled_tx));
    tracing::info!(probes = ?sensor.attached(), "streaming events");
    let paint = compact::Paint(compact::colour_stdout());
    let mut out = io::BufWriter::new(io::stdout().lock());
    loop {
        tokio::select! {
            signal = shutdown.wait() => {
                tracing::info!(signal, "stopping");
                break;
            }
            next = settled.next() => {
                let Some(next) = next else { break };
                if let Settled::Event(record) = next
                    && (options.kinds.is_empty() || options.kinds.contains(&record.kind))
                {
                    match options.format {
                        EventFormat::Json => serde_json::to_writer(&mut out, &record)
                            .context("encoding an event")?,
                        EventFormat::Compact => out
                            .write_all(compact::event_line(&record, paint).as_bytes())
                            .context("writing to stdout")?,
                    }
                    out.write_all(b"\n").context("writing to stdout")?;
                }
                // Flush per batch, whatever the last item of the batch was
                // (a record of a kind not asked for, a drift notice): lines
                // must reach a pipe reader promptly, not wait for the next
                // line of their kind.
                if settled.waiting(Lane::File) + settled.waiting(Lane::Bulk) == 0
                    && !out.buffer().is_empty()
                {
                    match out.flush() {
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
                        other => other.context("writing to stdout")?,
                    }
                }
            }
        }
    }
    let _ = out.flush();
    settling.abort();
    drop(sensor);
    Ok(ExitCode::SUCCESS)
}

fn load(dir: &Path) -> anyhow::Result<PolicySet> {
    if !dir.is_dir() {
        bail!("policy directory {} does not exist", dir.display());
    }
    reload::load_logged(dir).with_context(|| {
        format!(
            "the policies in {} have errors (logged above)",
            dir.display()
        )
    })
}
