//! SIGHUP, routed to everything that answers it: the policy reloader and
//! the alert log (reopened for logrotate).
use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

/// Installs the SIGHUP handler and returns the count of hangups so far,
/// which changes with each one. Installed before the agent says it runs, so
/// a SIGHUP sent right after is never lost.
pub fn install() -> anyhow::Result<watch::Receiver<u64>> {
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(rx)
}
