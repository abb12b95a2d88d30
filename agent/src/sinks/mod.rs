//! Where decisions go: the alert log (`alert`) and remote sinks (webhooks,
//! Alertmanager, the NATS bus). Handing an alert to a remote sink
//! only writes it to the sink's spool: delivery runs in its own task, in
//! order, retrying with backoff while the sink is down, so event handling
//! never waits for the network and nothing is lost across restarts. A
//! sink whose spool cannot be opened or whose receiver fails is reported
//! (`reflex_component_up{component="sink/NAME"}`) and retried; it never
//! stops the agent.
pub mod alert;
pub mod alertmanager;
pub mod bus;
pub mod falcosidekick;
pub mod logfile;
pub mod redact;
pub mod spool;
pub mod stdout;
pub mod webhook;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::sync::Notify;

use crate::{limits::LogEvery, telemetry::Metrics};
use spool::Spool;

/// Where a remote sink delivers.
#[derive(Clone, Debug)]
pub enum Target {
    /// A generic webhook.
    Webhook(webhook::WebhookConfig),
    /// Alertmanager.
    Alertmanager(alertmanager::AlertmanagerConfig),
    /// JetStream on the fleet bus.
    Bus(Arc<bus::Publisher>),
}

/// Default entry bound of each sink's spool.
pub const DEFAULT_SPOOL_ENTRIES: usize = 10_000;

/// Default byte bound of each sink's spool.
pub const DEFAULT_SPOOL_BYTES: u64 = 32 << 20;

/// Bounds of each sink's spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolBounds {
    /// Alerts kept.
    pub max_entries: usize,
    /// Bytes of alerts kept.
    pub max_bytes: u64,
}

impl Default for SpoolBounds {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_SPOOL_ENTRIES,
            max_bytes: DEFAULT_SPOOL_BYTES,
        }
    }
}

/// Longest wait between delivery attempts (and spool opening attempts).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A running remote sink.
pub struct RemoteSink {
    name: String,
    /// Set once the spool directory is open; until then alerts for this
    /// sink are dropped and counted.
    spool: Arc<OnceLock<Spool>>,
    wake: Arc<Notify>,
    metrics: Metrics,
    /// A flood of alerts to a dead sink logs its drops now and then.
    drop_log: LogEvery,
}

/// How often a sink's repeated drops are logged (they are all counted).
const DROP_LOG_PERIOD: Duration = Duration::from_secs(10);

impl RemoteSink {
    /// Starts the sink's task: it opens the spool under `state_dir`
    /// (retrying with backoff while it cannot) and delivers what waits
    /// there, also what an earlier run left.
    pub fn start(
        name: &str,
        target: Target,
        state_dir: &Path,
        bounds: SpoolBounds,
        metrics: Metrics,
    ) -> Self {
        let spool = Arc::new(OnceLock::new());
        let wake = Arc::new(Notify::new());
        metrics.queue_depth.with_label_values(&[name]).set(0);
        for result in ["ok", "error"] {
            metrics.deliveries.with_label_values(&[name, result]);
        }
        for reason in ["spool_full", "spool_write"] {
            metrics.alerts_dropped.with_label_values(&[name, reason]);
        }
        let dir = state_dir.join("spool").join(name);
        let sink = Self {
            name: name.to_string(),
            spool: spool.clone(),
            wake: wake.clone(),
            metrics: metrics.clone(),
            drop_log: LogEvery::new(DROP_LOG_PERIOD),
        };
        if let Some(opened) = open_spool(name, &dir, bounds, &metrics) {
            let _ = spool.set(opened);
        }
        let task = Delivery {
            name: name.to_string(),
            target,
            dir,
            bounds,
            spool,
            wake,
            metrics,
        };
        tokio::spawn(task.run());
        sink
    }

    /// The `component` label of sink `name`.
    pub fn component(name: &str) -> String {
        format!("sink/{name}")
    }

    /// Hands `body` (an alert as JSON) to the sink.
    pub fn push(&self, body: &[u8]) {
        let pushed = match self.spool.get() {
            Some(spool) => spool.push(body),
            None => Err(std::io::Error::other("the spool directory is not open")),
        };
        match pushed {
            Ok(pushed) => {
                if pushed.dropped > 0 {
                    self.metrics.health.stuck(
                        &Self::component(&self.name),
                        "spool full: oldest alerts dropped",
                    );
                    self.metrics
                        .alerts_dropped
                        .with_label_values(&[&self.name, "spool_full"])
                        .inc_by(pushed.dropped as u64);
                    if let Some(held) = self.drop_log.pass() {
                        tracing::warn!(
                            sink = self.name,
                            dropped = pushed.dropped,
                            earlier_unlogged = held,
                            "spool full: oldest alerts dropped (all counted in reflex_alerts_dropped_total)"
                        );
                    }
                }
                self.metrics
                    .spool_entries
                    .with_label_values(&[&self.name])
                    .set(pushed.waiting as i64);
                self.metrics
                    .limits
                    .spool_bytes
                    .with_label_values(&[&self.name])
                    .set(pushed.bytes as i64);
                self.wake.notify_one();
            }
            Err(err) => {
                self.metrics
                    .health
                    .stuck(&Self::component(&self.name), &format!("spooling: {err}"));
                self.metrics
                    .alerts_dropped
                    .with_label_values(&[&self.name, "spool_write"])
                    .inc();
                if let Some(held) = self.drop_log.pass() {
                    tracing::error!(sink = self.name, %err, earlier_unlogged = held, "cannot spool an alert; it is lost for this sink");
                }
            }
        }
    }
}

/// Opens the spool of sink `name`, reporting the outcome.
fn open_spool(name: &str, dir: &Path, bounds: SpoolBounds, metrics: &Metrics) -> Option<Spool> {
    let component = RemoteSink::component(name);
    match Spool::open(dir, bounds.max_entries, bounds.max_bytes) {
        Ok(spool) => {
            metrics
                .spool_entries
                .with_label_values(&[name])
                .set(spool.len() as i64);
            metrics
                .limits
                .spool_bytes
                .with_label_values(&[name])
                .set(spool.bytes() as i64);
            metrics.health.up(&component);
            Some(spool)
        }
        Err(err) => {
            let why = format!("opening {}: {err}", dir.display());
            metrics.health.down(&component, &why);
            None
        }
    }
}

/// One sink's delivery task.
struct Delivery {
    name: String,
    target: Target,
    dir: PathBuf,
    bounds: SpoolBounds,
    spool: Arc<OnceLock<Spool>>,
    wake: Arc<Notify>,
    metrics: Metrics,
}

impl Delivery {
    /// Opens the spool if it is not yet, then delivers spooled alerts oldest
    /// first; on failure waits (0.5 s doubling to 30 s) and tries the same
    /// one again.
    async fn run(self) {
        let Self {
            name,
            target,
            dir,
            bounds,
            spool,
            wake,
            metrics,
        } = self;
        let component = RemoteSink::component(&name);
        let mut backoff = Duration::from_millis(500);
        let spool = loop {
            if let Some(spool) = spool.get() {
                break spool;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if let Some(opened) = open_spool(&name, &dir, bounds, &metrics) {
                let _ = spool.set(opened);
            }
        };
        let client = reqwest::Client::new();
        backoff = Duration::from_millis(500);
        loop {
            let next = match spool.peek() {
                Ok(next) => next,
                Err(err) => {
                    tracing::error!(sink = name, %err, "reading the spool");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some((seq, body)) = next else {
                wake.notified().await;
                continue;
            };
            let sent = match &target {
                Target::Webhook(config) => webhook::send(&client, config, &body).await,
                Target::Alertmanager(config) => alertmanager::send(&client, config, &body).await,
                Target::Bus(publisher) => publisher.send(&body).await,
            };
            match sent {
                Ok(()) => {
                    metrics.deliveries.with_label_values(&[&name, "ok"]).inc();
                    metrics.health.up(&component);
                    backoff = Duration::from_millis(500);
                    match spool.remove(seq) {
                        Ok((waiting, bytes)) => {
                            metrics
                                .spool_entries
                                .with_label_values(&[&name])
                                .set(waiting as i64);
                            metrics
                                .limits
                                .spool_bytes
                                .with_label_values(&[&name])
                                .set(bytes as i64);
                        }
                        Err(err) => {
                            tracing::error!(sink = name, %err, "removing a delivered alert")
                        }
                    }
                }
                Err(err) => {
                    metrics
                        .deliveries
                        .with_label_values(&[&name, "error"])
                        .inc();
                    metrics.health.down(&component, &err);
                    tracing::warn!(sink = name, %err, retry_in = ?backoff, "alert delivery failed; it stays spooled");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
