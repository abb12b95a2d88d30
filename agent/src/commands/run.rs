//! `reflex run`: the daemon.
use std::{os::unix::fs::DirBuilderExt as _, process::ExitCode, sync::Arc};

use anyhow::{Context as _, bail};
use tokio::sync::watch;

use crate::{
    actions::{Executor, alert::AlertLog, run::HookRunner},
    cli::RunArgs,
    config::Settings,
    cpu::{CpuMonitor, CpuSampler},
    engine::{self, CpuSensor, reload},
    files::Files,
    net::BlockTable,
    sensor::{Sensor, SensorOptions},
    sinks::{RemoteSink, Target},
    telemetry::Metrics,
};

/// Loads the policies and probes, answers events until SIGINT/SIGTERM, then
/// detaches everything and returns success.
pub async fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let args = &Settings::resolve(args)?;
    if !args.policies.is_dir() {
        bail!(
            "policy directory {} does not exist",
            args.policies.display()
        );
    }
    let Some(set) = reload::load_logged(&args.policies) else {
        bail!(
            "the policies in {} have errors (logged above); nothing was started",
            args.policies.display()
        );
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.state_dir)
        .with_context(|| format!("creating state directory {}", args.state_dir.display()))?;
    let mut alerts = AlertLog::open(&args.state_dir, args.alerts_stdout)
        .with_context(|| format!("opening the alert log in {}", args.state_dir.display()))?;

    let mut shutdown = super::shutdown::Shutdown::install()?;
    let metrics = Metrics::new();
    alerts = alerts.with_metrics(&metrics);
    let remote = args
        .webhooks
        .iter()
        .map(|w| (w.name.clone(), Target::Webhook(w.clone())))
        .chain(
            args.alertmanager
                .iter()
                .map(|a| ("alertmanager".to_string(), Target::Alertmanager(a.clone()))),
        );
    for (name, target) in remote {
        let sink = RemoteSink::start(
            &name,
            target,
            &args.state_dir,
            args.spool_max,
            metrics.clone(),
        )
        .with_context(|| format!("opening the spool of alert sink {name}"))?;
        tracing::info!(sink = name, "alert sink ready");
        alerts = alerts.with_remote(sink);
    }
    metrics.policies_loaded.set(set.len() as i64);
    let served = crate::telemetry::server::serve(args.metrics_addr, metrics.clone())
        .await
        .with_context(|| format!("serving /metrics on {}", args.metrics_addr))?;
    tracing::info!(addr = %served, "metrics at http://{served}/metrics");
    let mut options = SensorOptions::default();
    let cpu_hz = (args.cpu_hz > 0).then_some(args.cpu_hz);
    options.load.cpu_hz = cpu_hz;
    let (mut sensor, records) =
        Sensor::start(options, metrics.clone()).context("starting the sensor")?;
    let cpu = match cpu_hz {
        Some(hz) => {
            let cpus = aya::util::online_cpus().map(|c| c.len()).unwrap_or(1);
            Some(CpuSensor {
                sampler: CpuSampler::new(sensor.take_cpu_maps()?, hz, cpus),
                monitor: CpuMonitor::default(),
                interval: args.cpu_interval,
            })
        }
        None => None,
    };
    let blocks = match sensor.cgroup() {
        Some(_) => {
            let mut table = BlockTable::new(sensor.take_block_maps()?);
            let rules = table.configure(&set);
            tracing::info!(rules, "block rules in force");
            Some(table)
        }
        None => {
            if !crate::net::rules(&set).is_empty() {
                tracing::error!(
                    "block policies cannot be enforced without a cgroup v2 hierarchy; they only report"
                );
            }
            None
        }
    };
    let mut files = Files::new(Some(sensor.take_watch_maps()?), &args.state_dir)
        .context("opening the baseline store")?;
    // Watches and baselines are in place before the agent says it runs.
    let drift = files.configure(&set);
    for probe in sensor.attached() {
        tracing::info!(probe = %probe, "attached");
    }
    let executor = Executor::new(
        alerts,
        HookRunner::new(args.max_hooks),
        args.kill_fuse,
        metrics.clone(),
    );
    let policy_count = set.len();
    let (set_tx, set_rx) = watch::channel(Arc::new(set));
    let reloader =
        tokio::spawn(reload::Reloader::new(args.policies.clone()).run(set_tx, metrics.clone()));
    let evaluator = tokio::spawn(engine::evaluate(
        records,
        set_rx,
        executor,
        Some(files),
        cpu,
        blocks,
        drift,
    ));
    tracing::info!(
        policies = policy_count,
        dir = %args.policies.display(),
        pid = std::process::id(),
        "reflex running"
    );
    crate::telemetry::notify::ready(&format!("{policy_count} policies in force"));

    let signal = shutdown.wait().await;
    tracing::info!(signal, "shutting down");
    crate::telemetry::notify::stopping();
    drop(sensor);
    reloader.abort();
    evaluator.abort();
    tracing::info!("probes detached");
    Ok(ExitCode::SUCCESS)
}
