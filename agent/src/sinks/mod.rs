//! Where decisions go: the alert log (`alert`) and remote sinks (webhooks,
//! Alertmanager). Handing an alert to a remote sink
//! only writes it to the sink's spool: delivery runs in its own task, in
//! order, retrying with backoff while the sink is down, so event handling
//! never waits for the network and nothing is lost across restarts.
pub mod alert;
pub mod alertmanager;
pub mod spool;
pub mod webhook;

use std::{path::Path, sync::Arc, time::Duration};

use tokio::sync::Notify;

use crate::telemetry::Metrics;
use spool::Spool;

/// Where a remote sink delivers.
#[derive(Clone, Debug)]
pub enum Target {
    /// A generic webhook.
    Webhook(webhook::WebhookConfig),
    /// Alertmanager.
    Alertmanager(alertmanager::AlertmanagerConfig),
}

/// Default bound of each sink's spool.
pub const DEFAULT_SPOOL_ENTRIES: usize = 10_000;

/// A running remote sink.
pub struct RemoteSink {
    name: String,
    spool: Arc<Spool>,
    wake: Arc<Notify>,
    metrics: Metrics,
}

impl RemoteSink {
    /// Opens the sink's spool under `state_dir` (delivering what an earlier
    /// run left) and starts its delivery task.
    pub fn start(
        name: &str,
        target: Target,
        state_dir: &Path,
        max_entries: usize,
        metrics: Metrics,
    ) -> std::io::Result<Self> {
        let spool = Arc::new(Spool::open(
            &state_dir.join("spool").join(name),
            max_entries,
        )?);
        let wake = Arc::new(Notify::new());
        metrics
            .spool_entries
            .with_label_values(&[name])
            .set(spool.len() as i64);
        metrics.queue_depth.with_label_values(&[name]).set(0);
        for result in ["ok", "error"] {
            metrics.deliveries.with_label_values(&[name, result]);
        }
        metrics
            .alerts_dropped
            .with_label_values(&[name, "spool_full"]);
        tokio::spawn(deliver(
            name.to_string(),
            target,
            spool.clone(),
            wake.clone(),
            metrics.clone(),
        ));
        Ok(Self {
            name: name.to_string(),
            spool,
            wake,
            metrics,
        })
    }

    /// Hands `body` (an alert as JSON) to the sink.
    pub fn push(&self, body: &[u8]) {
        match self.spool.push(body) {
            Ok(pushed) => {
                if pushed.dropped > 0 {
                    self.metrics
                        .alerts_dropped
                        .with_label_values(&[&self.name, "spool_full"])
                        .inc_by(pushed.dropped as u64);
                    tracing::warn!(
                        sink = self.name,
                        dropped = pushed.dropped,
                        "spool full: oldest alerts dropped"
                    );
                }
                self.metrics
                    .spool_entries
                    .with_label_values(&[&self.name])
                    .set(pushed.waiting as i64);
                self.wake.notify_one();
            }
            Err(err) => {
                self.metrics
                    .alerts_dropped
                    .with_label_values(&[&self.name, "spool_write"])
                    .inc();
                tracing::error!(sink = self.name, %err, "cannot spool an alert; it is lost for this sink");
            }
        }
    }
}

/// Delivers spooled alerts oldest first; on failure waits (0.5 s doubling
/// to 30 s) and tries the same one again.
async fn deliver(
    name: String,
    target: Target,
    spool: Arc<Spool>,
    wake: Arc<Notify>,
    metrics: Metrics,
) {
    let client = reqwest::Client::new();
    let mut backoff = Duration::from_millis(500);
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
        };
        match sent {
            Ok(()) => {
                metrics.deliveries.with_label_values(&[&name, "ok"]).inc();
                backoff = Duration::from_millis(500);
                match spool.remove(seq) {
                    Ok(waiting) => metrics
                        .spool_entries
                        .with_label_values(&[&name])
                        .set(waiting as i64),
                    Err(err) => tracing::error!(sink = name, %err, "removing a delivered alert"),
                }
            }
            Err(err) => {
                metrics
                    .deliveries
                    .with_label_values(&[&name, "error"])
                    .inc();
                tracing::warn!(sink = name, %err, retry_in = ?backoff, "alert delivery failed; it stays spooled");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
