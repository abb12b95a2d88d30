//! The agent's side of policies on the bus: follows the manifest key of
//! `bus.policies.bucket`, reads each complete revision, hands it to the
//! reloader, and reports what became of it: the revision in force in
//! `reflex_policy_revision{revision}` and in a key per host of the status
//! bucket, rejections in `reflex_policy_revisions_total{result}` and in
//! that key with their `KEY:line:column` errors.
use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt as _;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::{
    BusConfig, BusPolicies, host_name,
    revision::{DEFAULT_BUCKET, DEFAULT_STATUS_BUCKET, MANIFEST, Manifest, Remote},
};
use crate::telemetry::Metrics;

/// The `component` label of the policy feed.
pub const COMPONENT: &str = "bus/policies";

/// Longest wait between two attempts to reach the bucket.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the reloader made of a revision.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The revision.
    pub revision: String,
    /// Its errors (`KEY:line:column: …`); empty when it is in force.
    pub errors: Vec<String>,
    /// Policies of the bus a local file replaced.
    pub shadowed: Vec<String>,
}

/// The status key of one host.
#[derive(Debug, Default, Serialize)]
struct Status {
    host: String,
    /// Revision in force, if any.
    revision: Option<String>,
    /// The last revision rejected and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<Rejected>,
    /// Bus policies replaced by local files.
    shadowed: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Rejected {
    revision: String,
    errors: Vec<String>,
}

/// Metrics of the feed.
#[derive(Clone)]
struct FeedMetrics {
    revision: IntGaugeVec,
    revisions: IntCounterVec,
}

impl FeedMetrics {
    fn register(metrics: &Metrics) -> Self {
        let revision = IntGaugeVec::new(
            Opts::new(
                "reflex_policy_revision",
                "1 for the policy revision from the bus in force",
            ),
            &["revision"],
        )
        .expect("metric");
        let revisions = IntCounterVec::new(
            Opts::new(
                "reflex_policy_revisions_total",
                "Policy revisions from the bus, applied or rejected",
            ),
            &["result"],
        )
        .expect("metric");
        for result in ["applied", "rejected"] {
            revisions.with_label_values(&[result]);
        }
        let _ = metrics.registry.register(Box::new(revision.clone()));
        let _ = metrics.registry.register(Box::new(revisions.clone()));
        Self {
            revision,
            revisions,
        }
    }
}

/// Follows the bucket until `tx` has no receivers; reconnects with
/// backoff while the server or the bucket is away (the running set stays).
pub async fn follow(
    config: BusConfig,
    tx: watch::Sender<Option<Arc<Remote>>>,
    mut outcomes: mpsc::Receiver<Outcome>,
    metrics: Metrics,
) {
    let wanted = config.policies.clone().unwrap_or_default();
    let host = super::token(&config.host.clone().unwrap_or_else(host_name));
    let feed_metrics = FeedMetrics::register(&metrics);
    let mut status = Status {
        host: host.clone(),
        ..Status::default()
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        let ended = session(
            &config,
            &wanted,
            &host,
            &tx,
            &mut outcomes,
            &mut status,
            &feed_metrics,
            &metrics,
        )
        .await;
        if tx.is_closed() {
            return;
        }
        if let Err(why) = ended {
            metrics.health.down(COMPONENT, &why);
            tracing::warn!(%why, retry_in = ?backoff, "policy feed from the bus");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: watch the manifest, pass complete revisions on,
/// write outcomes to the status bucket.
#[allow(clippy::too_many_arguments)]
async fn session(
    config: &BusConfig,
    wanted: &BusPolicies,
    host: &str,
    tx: &watch::Sender<Option<Arc<Remote>>>,
    outcomes: &mut mpsc::Receiver<Outcome>,
    status: &mut Status,
    feed_metrics: &FeedMetrics,
    metrics: &Metrics,
) -> Result<(), String> {
    let client = config
        .connect(&format!("reflex {host} policies"))
        .await
        .map_err(|e| e.to_string())?;
    let context = jetstream::new(client);
    let bucket = wanted.bucket.as_deref().unwrap_or(DEFAULT_BUCKET);
    let store = context.get_key_value(bucket).await.map_err(|e| {
        format!(
            "no key-value bucket {bucket} on {} ({}); push a revision with `reflex policy push`",
            config.shown(),
            config.scrub(&crate::logging::error_chain(&e))
        )
    })?;
    let status_name = wanted
        .status_bucket
        .as_deref()
        .unwrap_or(DEFAULT_STATUS_BUCKET);
    let status_store = super::bucket(&context, status_name, 1)
        .await
        .map_err(|e| config.scrub(&e))?;
    let prefix = wanted.key_prefix.clone().unwrap_or_default();
    let manifest_key = format!("{prefix}{MANIFEST}");
    let mut watch = store
        .watch_with_history(&manifest_key)
        .await
        .map_err(|e| format!("watching {bucket}/{manifest_key}: {e}"))?;
    metrics.health.up(COMPONENT);
    tracing::info!(bucket, key = manifest_key, "following policies on the bus");
    put_status(&status_store, host, status).await;
    loop {
        tokio::select! {
            entry = watch.next() => {
                let entry = match entry {
                    Some(Ok(entry)) => entry,
                    Some(Err(e)) => return Err(format!("watching {bucket}/{manifest_key}: {e}")),
                    None => return Err(format!("the watch of {bucket}/{manifest_key} ended")),
                };
                if entry.operation != kv::Operation::Put {
                    continue;
                }
                match read_revision(&store, &entry.value).await {
                    Ok(Some(remote)) => {
                        tracing::info!(revision = remote.revision, files = remote.files.len(), "policy revision on the bus");
                        if tx.send(Some(Arc::new(remote))).is_err() {
                            return Ok(());
                        }
                    }
                    // Files already replaced by a newer push: its manifest follows.
                    Ok(None) => continue,
                    Err(why) => {
                        feed_metrics.revisions.with_label_values(&["rejected"]).inc();
                        tracing::error!(%why, "policy revision on the bus rejected; the running policies stay in force");
                        status.rejected = Some(Rejected { revision: "?".into(), errors: vec![why] });
                        put_status(&status_store, host, status).await;
                    }
                }
            }
            outcome = outcomes.recv() => {
                let Some(outcome) = outcome else { return Ok(()) };
                record(outcome, status, feed_metrics);
                put_status(&status_store, host, status).await;
            }
        }
    }
}

/// Folds what the reloader said into the status and the metrics.
fn record(outcome: Outcome, status: &mut Status, feed_metrics: &FeedMetrics) {
    if outcome.errors.is_empty() {
        feed_metrics.revisions.with_label_values(&["applied"]).inc();
        feed_metrics.revision.reset();
        feed_metrics
            .revision
            .with_label_values(&[&outcome.revision])
            .set(1);
        status.revision = Some(outcome.revision);
        status.rejected = None;
        status.shadowed = outcome.shadowed;
    } else {
        feed_metrics
            .revisions
            .with_label_values(&["rejected"])
            .inc();
        status.rejected = Some(Rejected {
            revision: outcome.revision,
            errors: outcome.errors,
        });
    }
}

/// The revision a manifest names, read whole; `None` when a file no
/// longer has the digest the manifest names (a newer push is under way).
async fn read_revision(store: &kv::Store, manifest: &[u8]) -> Result<Option<Remote>, String> {
    let manifest: Manifest =
        serde_json::from_slice(manifest).map_err(|e| format!("unreadable manifest: {e}"))?;
    let mut files = Vec::new();
    for (key, sum) in &manifest.files {
        let value = store
            .get(key.as_str())
            .await
            .map_err(|e| format!("reading {key}: {e}"))?;
        let Some(value) = value else {
            return Ok(None);
        };
        if super::revision::digest(&value) != *sum {
            return Ok(None);
        }
        let text = String::from_utf8(value.to_vec()).map_err(|_| format!("{key}: not UTF-8"))?;
        files.push((key.clone(), text));
    }
    Ok(Some(Remote {
        revision: manifest.revision,
        files,
    }))
}

async fn put_status(store: &kv::Store, host: &str, status: &Status) {
    let body = serde_json::to_vec(status).unwrap_or_default();
    if let Err(e) = store.put(host, body.into()).await {
        tracing::warn!(err = %e, host, "writing this host's policy status on the bus");
    }
}
