//! Readiness for a service manager (systemd `Type=notify`): ready once the
//! probes are attached and the policies are in force, reloading around each
//! policy reload, stopping on shutdown, and watchdog pings while every
//! stage turns ([`super::alive`]). Without `NOTIFY_SOCKET` nothing is sent.
use std::time::Duration;

use sd_notify::NotifyState;

/// The agent is attached and answering events.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// What the agent is doing, after a part of it failed or recovered.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A policy reload started; [`ready`] follows when it ends, either way.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(err) => tracing::warn!(%err, "reading the monotonic clock for the service manager"),
    }
}

/// The agent is detaching and will exit.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("detaching probes"),
    ]);
}

/// How often to ping the watchdog: half its timeout, when the service
/// manager set one for this process (`WATCHDOG_USEC`, and `WATCHDOG_PID`
/// naming it if set, as `sd_watchdog_enabled(3)` reads them).
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The agent's stages all turn.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!(%err, "telling the service manager");
    }
}
