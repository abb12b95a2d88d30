//! Readiness for a service manager (systemd `Type=notify`): ready once the
//! probes are attached and the policies are in force, reloading around each
//! policy reload, stopping on shutdown. Without `NOTIFY_SOCKET` nothing is
//! sent.
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

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!(%err, "telling the service manager");
    }
}
