//! Reloading policies on SIGHUP and when the policy directory changes. The
//! new set is validated whole; if anything is wrong the running set stays.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher as _};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    policy::{self, PolicySet},
    telemetry::Metrics,
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

/// Watches a policy directory and SIGHUP. Built before the agent says it is
/// running, so no change made after that is missed.
pub struct Reloader {
    dir: PathBuf,
    changes: mpsc::Receiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Reloader {
    /// Starts watching `dir` and SIGHUP; a failure of either is logged and
    /// leaves the other working.
    pub fn new(dir: PathBuf) -> Self {
        let (tx, changes) = mpsc::channel::<()>(16);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.try_send(());
            }
        })
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(err) => {
                tracing::warn!(%err, dir = %dir.display(), "cannot watch the policy directory; reload with SIGHUP");
                None
            }
        };
        let hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(err) => {
                tracing::warn!(%err, "cannot install the SIGHUP handler");
                None
            }
        };
        Self {
            dir,
            changes,
            _watcher: watcher,
            hup,
        }
    }

    /// Publishes each valid new set on `out` until `out` has no receivers.
    pub async fn run(mut self, out: watch::Sender<Arc<PolicySet>>, metrics: Metrics) {
        loop {
            tokio::select! {
                Some(()) = self.changes.recv() => {
                    // Let an editor or `cp` finish, then take everything at once.
                    tokio::time::sleep(SETTLE).await;
                    while self.changes.try_recv().is_ok() {}
                    tracing::info!(dir = %self.dir.display(), "policy directory changed");
                }
                Some(()) = async {
                    match self.hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::info!("SIGHUP: reloading policies");
                }
                () = out.closed() => return,
            }
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
                }
                None => {
                    metrics.reloads.with_label_values(&["rejected"]).inc();
                    tracing::error!("policy reload rejected; the running policies stay in force");
                }
            }
        }
    }
}
