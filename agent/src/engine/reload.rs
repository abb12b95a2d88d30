//! Reloading policies on SIGHUP, when the policy directory changes, and
//! when a new revision arrives from the bus. The new set (the directory
//! plus the bus's revision, local files winning on name clashes) is
//! validated whole; if anything is wrong the running set stays.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};

use crate::{
    bus::{
        feed::Outcome,
        revision::{self, Revisions},
    },
    policy::{self, PolicySet},
    telemetry::{Metrics, notify as service},
};

/// Changes closer together than this are loaded once.
const SETTLE: Duration = Duration::from_millis(200);

/// Loads the set in `dir`, logging every error with its file:line:column.
pub fn load_logged(dir: &Path) -> Option<PolicySet> {
    match policy::load_set(&[dir.to_owned()]) {
        Ok(set) => Some(set),
        Err(errors) => {
            for error in &errors {
                tracing::error!(%error, "policy error");
            }
            None
        }
    }
}

/// How often a vanished policy directory is looked for again.
const REAPPEAR_POLL: Duration = Duration::from_secs(1);

/// Watches a policy directory and SIGHUP. Built before the agent says it is
/// running, so no change made after that is missed.
pub struct Reloader {
    dir: PathBuf,
    tx: mpsc::Sender<()>,
    changes: mpsc::Receiver<()>,
    watcher: Option<notify::RecommendedWatcher>,
    hup: watch::Receiver<u64>,
    /// Revisions from the bus, and where to say what became of them.
    remote: Option<(Revisions, mpsc::Sender<Outcome>)>,
}

impl Reloader {
    /// Starts watching `dir`, and reloads whenever `hangups` (the SIGHUP
    /// count) changes; a failing watch is logged and leaves SIGHUP working.
    pub fn new(dir: PathBuf, hangups: watch::Receiver<u64>) -> Self {
        let (tx, changes) = mpsc::channel::<()>(16);
        let watcher = match watch_dir(&dir, tx.clone()) {
            Ok(w) => Some(w),
            Err(err) => {
                tracing::warn!(%err, dir = %dir.display(), "cannot watch the policy directory; reload with SIGHUP");
                None
            }
        };
        Self {
            dir,
            tx,
            changes,
            watcher,
            hup: hangups,
            remote: None,
        }
    }

    /// Also loads each revision `revisions` carries, telling `outcomes`
    /// whether it is in force.
    pub fn with_remote(mut self, revisions: Revisions, outcomes: mpsc::Sender<Outcome>) -> Self {
        self.remote = Some((revisions, outcomes));
        self
    }

    /// Publishes each valid new set on `out` until `out` has no receivers.
    /// A directory that disappears keeps the running set; when it comes
    /// back it is watched again and loaded.
    pub async fn run(mut self, out: watch::Sender<Arc<PolicySet>>, metrics: Metrics) {
        let mut revisions = self.remote.as_ref().map(|(rx, _)| rx.clone());
        let mut poll = tokio::time::interval(REAPPEAR_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(()) = self.changes.recv() => {
                    // Let an editor or `cp` finish, then take everything at once.
                    tokio::time::sleep(SETTLE).await;
                    while self.changes.try_recv().is_ok() {}
                    tracing::info!(dir = %self.dir.display(), "policy directory changed");
                }
                Ok(()) = self.hup.changed() => {
                    tracing::info!("SIGHUP: reloading policies");
                }
                Some(()) = remote_changed(&mut revisions) => {
                    tracing::info!("a policy revision arrived from the bus");
                }
                _ = poll.tick(), if self.watcher.is_none() => {
                    if !self.dir.is_dir() {
                        continue;
                    }
                    match watch_dir(&self.dir, self.tx.clone()) {
                        Ok(w) => self.watcher = Some(w),
                        Err(_) => continue,
                    }
                    tracing::info!(dir = %self.dir.display(), "policy directory is back; watching it again");
                }
                () = out.closed() => return,
            }
            if !self.dir.is_dir() {
                // The watch went with the directory; look for it again.
                self.watcher = None;
                metrics.reloads.with_label_values(&["rejected"]).inc();
                tracing::error!(dir = %self.dir.display(), "the policy directory is gone; the running policies stay in force");
                continue;
            }
            service::reloading();
            let dir = self.dir.clone();
            let current = self.remote.as_ref().and_then(|(rx, _)| rx.borrow().clone());
            let from_bus = current.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                revision::load_combined(&dir, from_bus.as_deref())
            })
            .await
            .unwrap_or_else(|_| Err(Vec::new()));
            let outcome = current.as_ref().map(|r| Outcome {
                revision: r.revision.clone(),
                errors: loaded
                    .as_ref()
                    .err()
                    .map(|e| e.iter().map(|e| e.to_string()).collect())
                    .unwrap_or_default(),
                shadowed: loaded
                    .as_ref()
                    .map(|c| c.shadowed.clone())
                    .unwrap_or_default(),
            });
            match loaded {
                Ok(combined) => {
                    for name in &combined.shadowed {
                        tracing::warn!(
                            policy = name,
                            "a local policy file replaces the bus's policy of the same name"
                        );
                    }
                    let set = combined.set;
                    let count = set.len();
                    // Swap first, then say so: whoever reads the log may act at once.
                    let _ = out.send(Arc::new(set));
                    metrics.reloads.with_label_values(&["ok"]).inc();
                    metrics.policies_loaded.set(count as i64);
                    tracing::info!(
                        policies = count,
                        revision = current.as_ref().map(|r| r.revision.as_str()),
                        "policies reloaded"
                    );
                    service::ready(&metrics.health.status());
                }
                Err(errors) => {
                    for error in &errors {
                        tracing::error!(%error, "policy error");
                    }
                    metrics.reloads.with_label_values(&["rejected"]).inc();
                    tracing::error!(
                        revision = current.as_ref().map(|r| r.revision.as_str()),
                        "policy reload rejected; the running policies stay in force"
                    );
                    service::ready(&format!(
                        "policy reload rejected; the previous policies stay in force{}",
                        metrics.health.down_note()
                    ));
                }
            }
            if let (Some(outcome), Some((_, tx))) = (outcome, &self.remote) {
                let _ = tx.try_send(outcome);
            }
        }
    }
}

/// Waits for the next revision from the bus (never, without a feed).
async fn remote_changed(revisions: &mut Option<Revisions>) -> Option<()> {
    match revisions {
        Some(rx) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}

/// A non-recursive watch of `dir` that sends on `tx` for anything but reads.
fn watch_dir(dir: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
