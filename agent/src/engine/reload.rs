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

/// Watches `dir` and SIGHUP; publishes each valid new set on `out`. Runs
/// until `out` has no receivers.
pub async fn watch_policies(dir: PathBuf, out: watch::Sender<Arc<PolicySet>>, metrics: Metrics) {
    let (tx, mut changes) = mpsc::channel::<()>(16);
    let notify_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = notify_tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(err) => {
            tracing::warn!(%err, dir = %dir.display(), "cannot watch the policy directory; reload with SIGHUP");
            None
        }
    };
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::warn!(%err, "cannot install the SIGHUP handler");
            None
        }
    };
    loop {
        tokio::select! {
            Some(()) = changes.recv() => {
                // Let an editor or `cp` finish, then take everything at once.
                tokio::time::sleep(SETTLE).await;
                while changes.try_recv().is_ok() {}
                tracing::info!(dir = %dir.display(), "policy directory changed");
            }
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading policies");
            }
            () = out.closed() => return,
        }
        let dir2 = dir.clone();
        let loaded = tokio::task::spawn_blocking(move || load_logged(&dir2))
            .await
            .ok()
            .flatten();
        match loaded {
            Some(set) => {
                metrics.reloads.with_label_values(&["ok"]).inc();
                metrics.policies_loaded.set(set.len() as i64);
                tracing::info!(policies = set.len(), "policies reloaded");
                let _ = out.send(Arc::new(set));
            }
            None => {
                metrics.reloads.with_label_values(&["rejected"]).inc();
                tracing::error!("policy reload rejected; the running policies stay in force");
            }
        }
    }
}
