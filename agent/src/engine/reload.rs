//! Reloading policies on SIGHUP and when the policy directory changes. The
//! new set is validated whole; if anything is wrong the running set stays.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};

use crate::{
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
        }
    }

    /// Publishes each valid new set on `out` until `out` has no receivers.
    /// A directory that disappears keeps the running set; when it comes
    /// back it is watched again and loaded.
    pub async fn run(mut self, out: watch::Sender<Arc<PolicySet>>, metrics: Metrics) {
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
            let loaded = tokio::task::spawn_blocking(move || load_logged(&dir))
                .await
                .ok()
                .flatten();
            match loaded {
                Some(set) => {
                    let count = set.len();
                    // Swap first, then say so: whoever reads the log may act at once.
                    let _ = out.send(Arc::new(set));
                    metrics.reloads.with_label_values(&["ok"]).inc();
                    metrics.policies_loaded.set(count as i64);
                    tracing::info!(policies = count, "policies reloaded");
                    service::ready(&metrics.health.status());
                }
                None => {
                    metrics.reloads.with_label_values(&["rejected"]).inc();
                    tracing::error!("policy reload rejected; the running policies stay in force");
                    service::ready(&format!(
                        "policy reload rejected; the previous policies stay in force{}",
                        metrics.health.down_note()
                    ));
                }
            }
        }
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
