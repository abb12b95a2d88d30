//! The filesystem worker pool's metrics.
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// The pool's metrics.
#[derive(Clone)]
pub struct PoolMetrics {
    /// `reflex_fs_jobs_queued`.
    pub queued: IntGauge,
    /// `reflex_fs_jobs_running`.
    pub running: IntGauge,
    /// `reflex_fs_threads_stuck`: threads written off, still in a call.
    pub stuck: IntGauge,
    /// `reflex_fs_timeouts_total{op}`.
    pub timeouts: IntCounterVec,
    /// `reflex_fs_jobs_failed_total{op,reason}`: jobs answered without a
    /// result (`timeout`, `stuck`, `full`, `stopped`).
    pub failed: IntCounterVec,
}

/// The `op` labels jobs use.
pub const OPS: [&str; 2] = ["settle", "revert"];

impl PoolMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let this = Self {
            queued: gauge(
                "reflex_fs_jobs_queued",
                "Filesystem jobs waiting for a thread.",
            ),
            running: gauge("reflex_fs_jobs_running", "Filesystem jobs running."),
            stuck: gauge(
                "reflex_fs_threads_stuck",
                "Filesystem worker threads written off in a call that has not returned.",
            ),
            timeouts: IntCounterVec::new(
                Opts::new(
                    "reflex_fs_timeouts_total",
                    "Filesystem jobs that missed their deadline, by operation.",
                ),
                &["op"],
            )
            .expect("valid metric"),
            failed: IntCounterVec::new(
                Opts::new(
                    "reflex_fs_jobs_failed_total",
                    "Filesystem jobs answered without a result, by operation and reason.",
                ),
                &["op", "reason"],
            )
            .expect("valid metric"),
        };
        for op in OPS {
            this.timeouts.with_label_values(&[op]);
            for reason in ["timeout", "stuck", "full"] {
                this.failed.with_label_values(&[op, reason]);
            }
        }
        for collector in [
            Box::new(this.queued.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(this.running.clone()),
            Box::new(this.stuck.clone()),
            Box::new(this.timeouts.clone()),
            Box::new(this.failed.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        this
    }

    /// Unregistered metrics, for tests and tools.
    pub fn unregistered() -> Self {
        Self::register(&Registry::new())
    }
}
