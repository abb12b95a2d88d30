//! Waiting for SIGINT or SIGTERM.
use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

/// Resolves when SIGINT or SIGTERM arrives; returns the signal's name.
pub async fn signalled() -> anyhow::Result<&'static str> {
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}
