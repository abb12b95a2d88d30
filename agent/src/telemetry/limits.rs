//! Metrics of the agent's own bounds: what was cut, dropped, refused or
//! rotated to stay within them (the README's "Limits" table).
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Values cut to their cap, by `field`.
pub const TRUNCATED_FIELDS: [&str; 4] = ["argv", "alert", "hook_stdin", "hook_output"];

/// Why a `/metrics` connection was closed by the agent.
pub const CONNECTION_DROPS: [&str; 3] = ["limit", "header_timeout", "idle_timeout"];

/// The bound-keeping metrics.
#[derive(Clone)]
pub struct LimitMetrics {
    /// `reflex_fields_truncated_total{field}`: values cut to their cap.
    pub fields_truncated: IntCounterVec,
    /// `reflex_alert_log_bytes`: size of the live `alerts.jsonl`.
    pub alert_log_bytes: IntGauge,
    /// `reflex_alert_log_rotations_total`: rotations of `alerts.jsonl`.
    pub alert_log_rotations: IntCounter,
    /// `reflex_alert_spool_bytes{sink}`: bytes of alerts spooled for a sink.
    pub spool_bytes: IntGaugeVec,
    /// `reflex_metrics_connections`: open `/metrics` connections.
    pub metrics_connections: IntGauge,
    /// `reflex_metrics_connections_limit`: the connection cap in force.
    pub metrics_connections_limit: IntGauge,
    /// `reflex_metrics_connections_dropped_total{reason}`: connections
    /// closed by the agent.
    pub metrics_connections_dropped: IntCounterVec,
    /// `reflex_hooks_running`: hooks running now.
    pub hooks_running: IntGauge,
    /// `reflex_hooks_skipped_total{policy,reason}`: hooks not started
    /// (`busy`: the overall cap, `policy_busy`: the policy's own cap).
    pub hooks_skipped: IntCounterVec,
    /// `reflex_hooks_timed_out_total{policy}`: hooks killed at their time limit.
    pub hooks_timed_out: IntCounterVec,
    /// `reflex_log_lines_dropped_total`: log lines lost because stderr
    /// was not read fast enough (brought up to date at each scrape).
    pub log_lines_dropped: IntCounter,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

impl LimitMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let this = Self {
            fields_truncated: counter_vec(
                "reflex_fields_truncated_total",
                "Values a process controls that were cut to their cap, by field.",
                &["field"],
            ),
            alert_log_bytes: gauge("reflex_alert_log_bytes", "Size of the live alerts.jsonl."),
            alert_log_rotations: IntCounter::new(
                "reflex_alert_log_rotations_total",
                "Times alerts.jsonl was rotated at its size bound.",
            )
            .expect("valid metric"),
            spool_bytes: IntGaugeVec::new(
                Opts::new(
                    "reflex_alert_spool_bytes",
                    "Bytes of alerts spooled on disk for a sink.",
                ),
                &["sink"],
            )
            .expect("valid metric"),
            metrics_connections: gauge(
                "reflex_metrics_connections",
                "Open connections to the metrics endpoint.",
            ),
            metrics_connections_limit: gauge(
                "reflex_metrics_connections_limit",
                "Metrics connections allowed at once (the setting, or less when descriptors are short).",
            ),
            metrics_connections_dropped: counter_vec(
                "reflex_metrics_connections_dropped_total",
                "Metrics connections the agent closed, by reason (limit, header_timeout, idle_timeout).",
                &["reason"],
            ),
            hooks_running: gauge("reflex_hooks_running", "Hooks running now."),
            hooks_skipped: counter_vec(
                "reflex_hooks_skipped_total",
                "Hooks not started because a cap was reached, by policy and reason (busy, policy_busy).",
                &["policy", "reason"],
            ),
            hooks_timed_out: counter_vec(
                "reflex_hooks_timed_out_total",
                "Hooks killed with their process group at their time limit, by policy.",
                &["policy"],
            ),
            log_lines_dropped: IntCounter::new(
                "reflex_log_lines_dropped_total",
                "Log lines lost because stderr's reader fell behind by the log queue's bound.",
            )
            .expect("valid metric"),
        };
        for field in TRUNCATED_FIELDS {
            this.fields_truncated.with_label_values(&[field]);
        }
        for reason in CONNECTION_DROPS {
            this.metrics_connections_dropped
                .with_label_values(&[reason]);
        }
        for collector in [
            Box::new(this.fields_truncated.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(this.alert_log_bytes.clone()),
            Box::new(this.alert_log_rotations.clone()),
            Box::new(this.spool_bytes.clone()),
            Box::new(this.metrics_connections.clone()),
            Box::new(this.metrics_connections_limit.clone()),
            Box::new(this.metrics_connections_dropped.clone()),
            Box::new(this.hooks_running.clone()),
            Box::new(this.hooks_skipped.clone()),
            Box::new(this.hooks_timed_out.clone()),
            Box::new(this.log_lines_dropped.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        this
    }

    /// The counter of `field` cut to its cap.
    pub fn truncated(&self, field: &str) -> IntCounter {
        self.fields_truncated.with_label_values(&[field])
    }
}
