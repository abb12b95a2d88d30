//! Which parts of the agent work: `reflex_component_up{component}` (the
//! metrics endpoint, each alert sink, the hook runner), each change logged
//! and told to the service manager as its STATUS. A part that fails is
//! reported and retried; it never stops enforcement.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

use super::notify;

/// Component states, shared by everything that reports one.
#[derive(Clone)]
pub struct Health {
    up: IntGaugeVec,
    policies: IntGauge,
    /// Components down, with why.
    down: Arc<Mutex<BTreeMap<String, String>>>,
    /// Components losing what they are handed (a sink past its spool's
    /// bound), with why: the agent is not ready while any is.
    stuck: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Health {
    /// Registers `reflex_component_up` in `registry`; STATUS lines name the
    /// policy count in `policies`.
    pub fn register(registry: &Registry, policies: IntGauge) -> Self {
        let up = IntGaugeVec::new(
            Opts::new(
                "reflex_component_up",
                "1 when a part of the agent works (metrics, sink/NAME, alert_log, hooks), 0 while it is failing and retried.",
            ),
            &["component"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(up.clone()))
            .expect("unique metric names");
        Self {
            up,
            policies,
            down: Arc::default(),
            stuck: Arc::default(),
        }
    }

    /// `component` works.
    pub fn up(&self, component: &str) {
        self.up.with_label_values(&[component]).set(1);
        lock(&self.stuck).remove(component);
        let was_down = self.lock().remove(component).is_some();
        if was_down {
            tracing::info!(component, "component works again");
            notify::status(&self.status());
        }
    }

    /// `component` fails because of `reason`; it is retried by its owner.
    pub fn down(&self, component: &str, reason: &str) {
        self.up.with_label_values(&[component]).set(0);
        let before = self
            .lock()
            .insert(component.to_string(), reason.to_string());
        if before.as_deref() != Some(reason) {
            tracing::error!(
                component,
                reason,
                "component failing; retrying, the rest of the agent runs"
            );
            notify::status(&self.status());
        }
    }

    /// `component` loses what it is handed because of `why` (it is also
    /// down); [`Health::up`] clears it.
    pub fn stuck(&self, component: &str, why: &str) {
        let before = lock(&self.stuck).insert(component.to_string(), why.to_string());
        if before.is_none() {
            self.down(component, why);
        }
    }

    /// `None`, or `"NAME (why), ..."` for the components that are stuck.
    pub fn stuck_note(&self) -> Option<String> {
        let stuck = lock(&self.stuck);
        if stuck.is_empty() {
            return None;
        }
        let parts: Vec<String> = stuck
            .iter()
            .map(|(c, why)| format!("{c} ({why})"))
            .collect();
        Some(parts.join(", "))
    }

    /// Whether `component` is up (never reported counts as up).
    pub fn is_up(&self, component: &str) -> bool {
        !self.lock().contains_key(component)
    }

    /// The service manager's STATUS: the policies in force and what is down.
    pub fn status(&self) -> String {
        format!(
            "{} policies in force{}",
            self.policies.get(),
            self.down_note()
        )
    }

    /// `""`, or `"; down: NAME (why), ..."`.
    pub fn down_note(&self) -> String {
        let down = self.lock();
        if down.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = down.iter().map(|(c, why)| format!("{c} ({why})")).collect();
        format!("; down: {}", parts.join(", "))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        lock(&self.down)
    }
}

fn lock(
    map: &Mutex<BTreeMap<String, String>>,
) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_what_is_down_until_it_is_back() {
        let registry = Registry::new();
        let policies = IntGauge::new("p", "p").unwrap();
        policies.set(3);
        let health = Health::register(&registry, policies);
        health.up("hooks");
        assert_eq!(health.status(), "3 policies in force");
        health.down("metrics", "Address already in use");
        assert_eq!(
            health.status(),
            "3 policies in force; down: metrics (Address already in use)"
        );
        assert_eq!(health.up.with_label_values(&["metrics"]).get(), 0);
        health.up("metrics");
        assert_eq!(health.status(), "3 policies in force");
        assert_eq!(health.up.with_label_values(&["metrics"]).get(), 1);
    }

    #[test]
    fn a_stuck_sink_is_down_and_named_until_it_delivers_again() {
        let health = Health::register(&Registry::new(), IntGauge::new("p", "p").unwrap());
        assert_eq!(health.stuck_note(), None);
        health.stuck("sink/ops", "spool full");
        assert_eq!(
            health.stuck_note().as_deref(),
            Some("sink/ops (spool full)")
        );
        assert!(!health.is_up("sink/ops"));
        health.up("sink/ops");
        assert_eq!(health.stuck_note(), None);
        assert!(health.is_up("sink/ops"));
    }
}
