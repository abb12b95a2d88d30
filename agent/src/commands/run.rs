//! `reflex run`: the daemon.
use std::{os::unix::fs::DirBuilderExt as _, process::ExitCode, sync::Arc};

use anyhow::{Context as _, bail};
use tokio::sync::watch;

use crate::{
    actions::{Executor, run::HookRunner},
    blocks::BlockTable,
    cli::RunArgs,
    config::Settings,
    engine::{Engine, reload},
    sensor::{Sensor, SensorOptions},
    settle::{
        Settler,
        cpu::{CpuSampler, CpuSettler},
        file::{FileSettler, baseline::BaselineStore},
    },
    sinks::{RemoteSink, Target, alert::AlertLog},
    telemetry::Metrics,
};

/// Finished events waiting for the engine, and judged events waiting for
/// actions. Small: the sensor's queue in front absorbs bursts, and a slow
/// stage holds the ones before it back rather than growing memory.
const STAGE_QUEUE: usize = 1024;

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
    let mut options = SensorOptions {
        ancestry_depth: args.ancestry_depth,
        ..SensorOptions::default()
    };
    let cpu_hz = (args.cpu_hz > 0).then_some(args.cpu_hz);
    options.load.cpu_hz = cpu_hz;
    let (mut sensor, records) =
        Sensor::start(options, metrics.clone()).context("starting the sensor")?;
    let cpu = match cpu_hz {
        Some(hz) => {
            let cpus = aya::util::online_cpus().map(|c| c.len()).unwrap_or(1);
            let sampler = CpuSampler::new(sensor.take_cpu_maps()?, hz, cpus);
            Some(CpuSettler::new(sampler, args.cpu_interval))
        }
        None => None,
    };
    let set = Arc::new(set);
    let (set_tx, set_rx) = watch::channel(set.clone());
    let blocks = match sensor.cgroup() {
        Some(_) => {
            let mut table = BlockTable::new(sensor.take_block_maps()?);
            let rules = table.configure(&set);
            tracing::info!(rules, "block rules in force");
            Some(tokio::spawn(table.follow(set_rx.clone())))
        }
        None => {
            if !crate::blocks::rules(&set).is_empty() {
                tracing::error!(
                    "block policies cannot be enforced without a cgroup v2 hierarchy; they only report"
                );
            }
            None
        }
    };
    let baselines = BaselineStore::open(&args.state_dir)
        .context("opening the baseline store")?
        .with_history(args.baseline_history)
        .with_metrics(metrics.baseline_versions_pruned.clone());
    let files = FileSettler::new(Some(sensor.take_watch_maps()?), Some(baselines))
        .with_metrics(metrics.clone());
    // Watches and baselines are in place before the agent says it runs.
    let (settler, drift) = Settler::new(files, cpu, set.clone());
    for probe in sensor.attached() {
        tracing::info!(probe = %probe, "attached");
    }
    let (followup_tx, followup_rx) = tokio::sync::mpsc::unbounded_channel();
    let (settled_tx, settled_rx) = tokio::sync::mpsc::channel(STAGE_QUEUE);
    let (judged_tx, judged_rx) = tokio::sync::mpsc::channel(STAGE_QUEUE);
    let executor = Executor::new(alerts, HookRunner::new(args.max_hooks), metrics.clone())
        .with_reverts(args.state_dir.clone(), followup_tx)
        .with_evidence(args.evidence);
    let engine = Engine::new(set.clone(), args.kill_fuse, Some(metrics.clone()));
    let policy_count = set.len();
    let reloader =
        tokio::spawn(reload::Reloader::new(args.policies.clone()).run(set_tx, metrics.clone()));
    let stages = [
        tokio::spawn(settler.run(drift, records, set_rx, followup_rx, settled_tx)),
        tokio::spawn(engine.run(settled_rx, judged_tx)),
        tokio::spawn(executor.run(judged_rx)),
    ];
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
    for task in stages.iter().chain(&blocks) {
        task.abort();
    }
    tracing::info!("probes detached");
    Ok(ExitCode::SUCCESS)
}
