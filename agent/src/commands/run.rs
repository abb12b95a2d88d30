//! `reflex run`: the daemon.
use std::{process::ExitCode, sync::Arc};

use anyhow::{Context as _, bail};
use tokio::sync::watch;

use super::{descriptors, state};
use crate::{
    actions::{
        Executor,
        run::{HookRunner, Inherited},
    },
    blocks::{BlockTable, interest::InterestTable},
    cli::RunArgs,
    config::Settings,
    engine::{Engine, reload},
    exec_kills::ExecKillTable,
    fsio::pool::FsPool,
    lanes,
    sensor::{Sensor, SensorOptions},
    settle::{
        Settler,
        cpu::CpuSettler,
        file::{FileSettler, baseline::BaselineStore},
    },
    sinks::{RemoteSink, Target, alert::AlertLog},
    telemetry::{Metrics, server::ServerLimits},
};

/// Loads the policies and probes, answers events until SIGINT/SIGTERM, then
/// detaches everything and returns success. Enforcement starts whatever
/// happens to `/metrics`, a sink or the hook runner: a failing part is
/// reported and retried.
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
    let umask = state::private_umask();
    let secured = state::secure(&args.state_dir).context("securing the state directory")?;
    if secured != state::Secured::default() {
        tracing::warn!(
            dir = %args.state_dir.display(),
            modes = secured.modes,
            owners = secured.owners,
            "state directory entries were open to others or owned by another user; made private"
        );
    }
    let nofile = descriptors::raise();
    tracing::info!(
        soft = nofile.soft,
        inherited = nofile.inherited.0,
        "descriptor limit"
    );

    let mut shutdown = super::shutdown::Shutdown::install()?;
    let hangups = super::hangup::install()?;
    let metrics = Metrics::new();
    metrics.policies_loaded.set(set.len() as i64);
    // Stage beats are judged, and the watchdog pinged, from here on.
    metrics.alive.set_stall_after(args.stall_after);
    let alive = tokio::spawn(metrics.alive.clone().run());
    let mut alerts =
        AlertLog::open(&args.state_dir, args.alerts_stdout, args.alert_log).with_metrics(&metrics);
    let remote = args
        .webhooks
        .iter()
        .map(|w| (w.name.clone(), Target::Webhook(w.clone())))
        .chain(
            args.alertmanager
                .iter()
                .map(|a| ("alertmanager".to_string(), Target::Alertmanager(a.clone()))),
        )
        .chain(args.bus.iter().map(|b| {
            let publisher = crate::sinks::bus::Publisher::new(b.clone());
            ("bus".to_string(), Target::Bus(Arc::new(publisher)))
        }));
    for (name, target) in remote {
        let sink = RemoteSink::start(&name, target, &args.state_dir, args.spool, metrics.clone());
        tracing::info!(sink = name, "alert sink started");
        alerts = alerts.with_remote(sink);
    }
    let mut options = SensorOptions {
        ancestry_depth: args.ancestry_depth,
        cgroup_cache: args.cgroup_cache,
        queue: args.event_queue,
        file_queue: args.file_queue,
        exec_flush: args.exec_flush,
        ..SensorOptions::default()
    };
    let cpu_hz = (args.cpu_hz > 0).then_some(args.cpu_hz);
    options.load.cpu_hz = cpu_hz;
    options.load.exec_kill_entries = crate::settle::exec::kernel_room(&set);
    options.load.watch_room = crate::settle::file::watch::capacity::room(&set, args.watch);
    tracing::info!(room = ?options.load.watch_room, "kernel watch maps");
    options.load.interest_room = crate::blocks::room::room(&set, args.max_prefixes);
    options.load.block_room = crate::blocks::room::block_room(&set, args.max_prefixes);
    options.load.rings = args.rings;
    options.load.filter_connects = true;
    let (mut sensor, records) =
        Sensor::start(options, metrics.clone()).context("starting the sensor")?;
    let cpu = match cpu_hz {
        Some(hz) => Some(CpuSettler::start(
            sensor.take_cpu_maps()?,
            hz,
            args.cpu_interval,
        )),
        None => None,
    };
    let set = Arc::new(set);
    let (set_tx, set_rx) = watch::channel(set.clone());
    let blocks = match sensor.cgroup() {
        Some(_) => {
            let mut table = BlockTable::new(sensor.take_block_maps()?, metrics.clone());
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
    // Only connects some loaded policy could match leave the kernel, from
    // the first set on and after every reload.
    let mut interest = InterestTable::new(sensor.take_interest_maps()?, metrics.clone());
    interest.configure(&set);
    let interest = tokio::spawn(interest.follow(set_rx.clone()));
    let baselines = BaselineStore::open(&args.state_dir)
        .context("opening the baseline store")?
        .with_history(args.baseline_history)
        .with_metrics(metrics.baseline_versions_pruned.clone())
        .with_max_xattr_bytes(args.baseline_max_xattr_bytes)
        .with_xattr_metrics(metrics.baseline_xattrs_refused.clone());
    // Hashing, restoring and reading files run here, never on the tasks
    // that handle events: a hung filesystem holds up its own files only.
    let pool = FsPool::start(args.fs, metrics.fs.clone());
    let files = FileSettler::new(Some(sensor.take_watch_maps()?), Some(baselines))
        .with_max_scan(args.watch.max_scan)
        .with_marks(sensor.file_marks())
        .with_metrics(metrics.clone());
    // Watches, baselines and in-kernel exec kills are in place before the
    // agent says it runs.
    let (kill_tx, mut kill_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut exec_kills =
        ExecKillTable::new(Some(sensor.take_exec_kill_maps()?), Some(metrics.clone()));
    let (settler, drift) = Settler::new(files, cpu, set.clone());
    // Configured (drift found) inline above, before the agent says it
    // runs; from here on files are looked at on the pool.
    let settler = settler.with_pool(pool.clone());
    let settler = settler
        .with_metrics(&metrics)
        .with_exec_kills(kill_tx.clone());
    exec_kills.drain(&mut kill_rx);
    tracing::info!(
        executables = exec_kills.armed().len(),
        "in-kernel exec kills in force"
    );
    for probe in sensor.attached() {
        tracing::info!(probe = %probe, "attached");
    }
    let (followup_tx, followup_rx) = tokio::sync::mpsc::unbounded_channel();
    // Both lanes through every stage (`crate::lanes`), each queue bounded.
    let (settled_tx, settled_rx) = lanes::channel(args.stage_queue, args.stage_queue);
    let settled_rx = settled_rx.with_gauges(metrics.stage_gauges("engine"));
    let (judged_tx, judged_rx) = lanes::channel(args.stage_queue, args.stage_queue);
    let judged_rx = judged_rx.with_gauges(metrics.stage_gauges("actions"));
    let hooks = HookRunner::new(args.hooks)
        .with_inherited(Inherited {
            nofile: Some(nofile.inherited),
            umask: Some(umask),
        })
        .with_metrics(metrics.clone());
    let executor = Executor::new(alerts, hooks, metrics.clone())
        .with_reverts(args.state_dir.clone(), followup_tx.clone())
        .with_pool(pool.clone())
        .with_reopen(hangups.clone())
        .with_stdin_bound(args.alert_log.max_line_bytes)
        .with_evidence(args.evidence);
    let engine = Engine::new(set.clone(), args.kill_fuse, Some(metrics.clone()))
        .with_exec_kills(kill_tx)
        .with_file_kills(followup_tx);
    let policy_count = set.len();
    let mut reloader = reload::Reloader::new(args.policies.clone(), hangups);
    if let Some(bus) = args.bus.as_ref().filter(|b| b.policies.is_some()) {
        let (revisions_tx, revisions_rx) = watch::channel(None);
        let (outcomes_tx, outcomes_rx) = tokio::sync::mpsc::channel(16);
        reloader = reloader.with_remote(revisions_rx, outcomes_tx);
        tokio::spawn(crate::bus::feed::follow(
            bus.clone(),
            revisions_tx,
            outcomes_rx,
            metrics.clone(),
        ));
    }
    let reloader = tokio::spawn(reloader.run(set_tx, metrics.clone()));
    let stages = [
        tokio::spawn(settler.run(drift, records, set_rx, followup_rx, settled_tx)),
        tokio::spawn(engine.run(settled_rx, judged_tx)),
        tokio::spawn(executor.run(judged_rx)),
        tokio::spawn(exec_kills.run(kill_rx)),
    ];
    serve_metrics(args, &metrics, nofile.soft).await;
    metrics.alive.started();
    tracing::info!(
        policies = policy_count,
        dir = %args.policies.display(),
        pid = std::process::id(),
        "reflex running"
    );
    crate::telemetry::notify::ready(&metrics.health.status());

    let signal = shutdown.wait().await;
    tracing::info!(signal, "shutting down");
    crate::telemetry::notify::stopping();
    drop(sensor);
    reloader.abort();
    interest.abort();
    alive.abort();
    for task in stages.iter().chain(&blocks) {
        task.abort();
    }
    pool.stop();
    tracing::info!("probes detached");
    Ok(ExitCode::SUCCESS)
}

/// Serves `/metrics` with a connection cap that leaves the descriptor
/// reserve free, counted once everything else is open; a port that cannot
/// be bound is retried in the background.
async fn serve_metrics(args: &Settings, metrics: &Metrics, nofile: u64) {
    let wanted = args.metrics_limits.max_connections;
    let in_use = descriptors::open_now();
    let cap = descriptors::connection_cap(
        nofile,
        in_use,
        args.descriptor_reserve,
        args.hooks.max,
        wanted,
    );
    if cap < wanted {
        tracing::warn!(
            wanted,
            cap,
            limit = nofile,
            in_use,
            reserve = args.descriptor_reserve,
            "the descriptor limit is too low for metrics.max_connections; fewer are allowed"
        );
    }
    let limits = ServerLimits {
        max_connections: cap,
        ..args.metrics_limits
    };
    crate::telemetry::server::serve(args.metrics_addr, metrics.clone(), limits).await;
}
