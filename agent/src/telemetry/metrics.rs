//! The agent's metrics. Every place an event can be lost has a counter.
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The `family` label of losses whose family cannot be trusted (a record
/// that does not decode).
pub const UNKNOWN_FAMILY: &str = "unknown";

/// All metric families, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry that `/metrics` renders.
    pub registry: Registry,
    /// `reflex_events_total{family,kind}`: events decoded.
    pub events: IntCounterVec,
    /// `reflex_events_lost_total{place,reason,family}`: events that never reached a policy.
    pub lost: IntCounterVec,
    /// `reflex_process_table_entries`: processes held in the process table.
    pub process_table: IntGauge,
    /// `reflex_event_queue_records{lane}`: records between sensor and settler.
    pub event_queue: IntGaugeVec,
    /// `reflex_stage_queue_items{stage,lane}`: items waiting for the engine
    /// and for actions.
    pub stage_queue: IntGaugeVec,
    /// `reflex_throttle_windows`: throttle windows held (at most 65 536).
    pub throttle_windows: IntGauge,
    /// `reflex_throttle_overflow_total`: occurrences whose key found no
    /// room and shared its policy's overflow window.
    pub throttle_overflow: IntCounter,
    /// `reflex_kill_fuse_entries`: executables the kill fuses remember
    /// (at most `kill_fuse` + 1 per kill policy).
    pub kill_fuse_entries: IntGauge,
    /// `reflex_probe_attached{probe}`: 1 for each attached probe.
    pub probes: IntGaugeVec,
    /// `reflex_policy_matches_total{policy,mode}`: events a policy matched.
    pub policy_matches: IntCounterVec,
    /// `reflex_actions_total{action,result}`: actions carried out.
    pub actions: IntCounterVec,
    /// `reflex_kill_fuse_blown_total{policy}`: kill fuses that blew (the
    /// policy's kills are off until the next reload).
    pub kill_fuse_blown: IntCounterVec,
    /// `reflex_policies_loaded`: policies in the running set.
    pub policies_loaded: IntGauge,
    /// `reflex_policy_reloads_total{result}`: reload attempts.
    pub reloads: IntCounterVec,
    /// `reflex_action_latency_seconds{action}`: event (kernel time) to action done.
    pub action_latency: HistogramVec,
    /// `reflex_alert_deliveries_total{sink,result}`: alerts handed to a sink.
    pub deliveries: IntCounterVec,
    /// `reflex_alert_queue_depth{sink}`: alerts waiting for a sink.
    pub queue_depth: IntGaugeVec,
    /// `reflex_alert_spool_entries{sink}`: alerts waiting on disk.
    pub spool_entries: IntGaugeVec,
    /// `reflex_alerts_dropped_total{sink,reason}`: alerts a sink will never get.
    pub alerts_dropped: IntCounterVec,
    /// `reflex_block_rule_errors_total{reason}`: block trie entries not
    /// installed as the policies say (`install_failed`: left out, the
    /// shorter prefix around it decides; `too_many_ports`: ranges joined,
    /// refusing more ports than named).
    pub block_rule_errors: IntCounterVec,
    /// What was cut, dropped or refused to keep the agent's bounds.
    pub limits: super::limits::LimitMetrics,
    /// Ring buffer sizes and kernel filters.
    pub kernel: super::kernel::KernelMetrics,
    /// `reflex_component_up{component}` and the service manager's STATUS.
    pub health: super::health::Health,
    /// Whether the pipeline's stages turn (`/healthz`, the watchdog).
    pub alive: super::alive::Alive,
    /// The file watch list's kernel maps.
    pub watch: super::watch::WatchMetrics,
    /// `reflex_exec_kill_entries`: executables (by identity) the kernel kills at exec.
    pub exec_kill_entries: IntGauge,
    /// `reflex_fanotify_marks`: watched files fanotify reports changes of.
    pub fanotify_marks: IntGauge,
    /// `reflex_fanotify_notices_total`: changes of watched files fanotify
    /// reported (apart from `reflex_events_total`, which counts the probes').
    pub fanotify_notices: IntCounter,
    /// `reflex_exec_kill_errors_total`: identities or names that could not
    /// be armed in the kernel (those execs are killed from user space, later).
    pub exec_kill_errors: IntCounter,
    /// `reflex_exec_watch_overflows_total`: times files appeared in exec
    /// policy directories faster than the settler read them (the globs
    /// were expanded again).
    pub exec_watch_overflows: IntCounter,
    /// `reflex_process_ancestry_truncated_total`: chains cut at `process.ancestry_depth`.
    pub ancestry_truncated: IntCounter,
    /// `reflex_baselines_accepted_total{policy,how}`: changes that became the baseline.
    pub baselines_accepted: IntCounterVec,
    /// `reflex_baseline_versions_pruned_total`: predecessors dropped past `baselines.history`.
    pub baseline_versions_pruned: IntCounter,
    /// `reflex_evidence_dropped_total{reason}`: rejected content not kept (or no longer kept).
    pub evidence_dropped: IntCounterVec,
    /// `reflex_baseline_xattrs_refused_total{reason}`: baseline versions
    /// recorded without their extended attributes.
    pub baseline_xattrs_refused: IntCounterVec,
    /// The filesystem worker pool's queue, threads and timeouts.
    pub fs: crate::fsio::pool::PoolMetrics,
    /// The identity cache (`reflex_cgroup_*`).
    pub identity: crate::identity::IdentityMetrics,
}

impl Metrics {
    /// The gauges of `stage`'s lanes (file, bulk).
    pub fn stage_gauges(&self, stage: &str) -> [IntGauge; 2] {
        crate::lanes::Lane::ALL
            .map(|lane| self.stage_queue.with_label_values(&[stage, lane.label()]))
    }

    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new(
                "reflex_events_total",
                "Events decoded from the kernel, by family and kind.",
            ),
            &["family", "kind"],
        )
        .expect("valid metric");
        let lost = IntCounterVec::new(
            Opts::new(
                "reflex_events_lost_total",
                "Events lost before evaluation, by place (kernel, decode), reason and event family.",
            ),
            &["place", "reason", "family"],
        )
        .expect("valid metric");
        let process_table = IntGauge::new(
            "reflex_process_table_entries",
            "Processes held in the agent's process table.",
        )
        .expect("valid metric");
        let throttle_windows = IntGauge::new(
            "reflex_throttle_windows",
            "Throttle windows held, one per policy and key (at most 65536).",
        )
        .expect("valid metric");
        let throttle_overflow = IntCounter::new(
            "reflex_throttle_overflow_total",
            "Throttled occurrences whose key found no room and shared the policy's overflow window.",
        )
        .expect("valid metric");
        let kill_fuse_entries = IntGauge::new(
            "reflex_kill_fuse_entries",
            "Executables the kill fuses remember, each with its last kill (at most kill_fuse + 1 per kill policy).",
        )
        .expect("valid metric");
        let event_queue = IntGaugeVec::new(
            Opts::new(
                "reflex_event_queue_records",
                "Records waiting between the sensor and the settler, per lane (at most file_queue, event_queue).",
            ),
            &["lane"],
        )
        .expect("valid metric");
        let stage_queue = IntGaugeVec::new(
            Opts::new(
                "reflex_stage_queue_items",
                "Items waiting for a stage (engine, actions), per lane (at most stage_queue).",
            ),
            &["stage", "lane"],
        )
        .expect("valid metric");
        for lane in crate::lanes::Lane::ALL {
            event_queue.with_label_values(&[lane.label()]);
            for stage in ["engine", "actions"] {
                stage_queue.with_label_values(&[stage, lane.label()]);
            }
        }
        let probes = IntGaugeVec::new(
            Opts::new("reflex_probe_attached", "1 for each kernel probe attached."),
            &["probe"],
        )
        .expect("valid metric");
        let policy_matches = IntCounterVec::new(
            Opts::new(
                "reflex_policy_matches_total",
                "Events a policy matched, by policy and the mode in effect.",
            ),
            &["policy", "mode"],
        )
        .expect("valid metric");
        let actions = IntCounterVec::new(
            Opts::new(
                "reflex_actions_total",
                "Actions carried out, by action and result.",
            ),
            &["action", "result"],
        )
        .expect("valid metric");
        let kill_fuse_blown = IntCounterVec::new(
            Opts::new(
                "reflex_kill_fuse_blown_total",
                "Kill fuses that blew, by policy: its kills are off until the next reload.",
            ),
            &["policy"],
        )
        .expect("valid metric");
        let policies_loaded =
            IntGauge::new("reflex_policies_loaded", "Policies in the running set.")
                .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "reflex_policy_reloads_total",
                "Policy reloads, by result (ok, rejected).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let action_latency = HistogramVec::new(
            HistogramOpts::new(
                "reflex_action_latency_seconds",
                "Time from the event in the kernel to the action done, by action.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ]),
            &["action"],
        )
        .expect("valid metric");
        let deliveries = IntCounterVec::new(
            Opts::new(
                "reflex_alert_deliveries_total",
                "Alert deliveries, by sink and result (ok, error).",
            ),
            &["sink", "result"],
        )
        .expect("valid metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "reflex_alert_queue_depth",
                "Alerts queued in memory for a sink.",
            ),
            &["sink"],
        )
        .expect("valid metric");
        let spool_entries = IntGaugeVec::new(
            Opts::new(
                "reflex_alert_spool_entries",
                "Alerts spooled on disk for a sink.",
            ),
            &["sink"],
        )
        .expect("valid metric");
        let alerts_dropped = IntCounterVec::new(
            Opts::new(
                "reflex_alerts_dropped_total",
                "Alerts a sink will never receive, by sink and reason.",
            ),
            &["sink", "reason"],
        )
        .expect("valid metric");
        let block_rule_errors = IntCounterVec::new(
            Opts::new(
                "reflex_block_rule_errors_total",
                "Block trie entries not installed as the policies say, by reason (install_failed, too_many_ports).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let ancestry_truncated = IntCounter::new(
            "reflex_process_ancestry_truncated_total",
            "Process ancestry chains cut at process.ancestry_depth (the farthest ancestors dropped).",
        )
        .expect("valid metric");
        let baselines_accepted = IntCounterVec::new(
            Opts::new(
                "reflex_baselines_accepted_total",
                "Changes that became a file's baseline, by policy and how (writer: an accept_from writer; drift: on_drift accept; withdrawn: an acceptance undone because an unauthorised write raced it).",
            ),
            &["policy", "how"],
        )
        .expect("valid metric");
        let baseline_versions_pruned = IntCounter::new(
            "reflex_baseline_versions_pruned_total",
            "Earlier baseline versions dropped past baselines.history.",
        )
        .expect("valid metric");
        let evidence_dropped = IntCounterVec::new(
            Opts::new(
                "reflex_evidence_dropped_total",
                "Rejected content a revert did not keep (too_large, write) or removed later (pruned: past evidence.max_files).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in ["install_failed", "too_many_ports"] {
            block_rule_errors.with_label_values(&[reason]);
        }
        let exec_kill_entries = IntGauge::new(
            "reflex_exec_kill_entries",
            "Executables, by device and inode, that the kernel kills at exec.",
        )
        .expect("valid metric");
        let fanotify_marks = IntGauge::new(
            "reflex_fanotify_marks",
            "Watched files marked for fanotify, which sees changes the syscall probes cannot (io_uring, held descriptors, shared mappings).",
        )
        .expect("valid metric");
        let fanotify_notices = IntCounter::new(
            "reflex_fanotify_notices_total",
            "Changes of watched files reported by fanotify (the probes' events are in reflex_events_total).",
        )
        .expect("valid metric");
        let exec_kill_errors = IntCounter::new(
            "reflex_exec_kill_errors_total",
            "Executables or names an enforcing exec kill policy covers that could not be armed in the kernel.",
        )
        .expect("valid metric");
        let exec_watch_overflows = IntCounter::new(
            "reflex_exec_watch_overflows_total",
            "Times files appeared in exec policy directories faster than they were read (the paths were expanded again).",
        )
        .expect("valid metric");
        for reason in ["too_large", "write", "pruned"] {
            evidence_dropped.with_label_values(&[reason]);
        }
        let baseline_xattrs_refused = IntCounterVec::new(
            Opts::new(
                "reflex_baseline_xattrs_refused_total",
                "Baseline versions recorded without the file's extended attributes (neither compared nor restored), by reason (too_large: past baselines.max_xattr_bytes; name: a name that is not UTF-8; read: they could not be read).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in ["too_large", "name", "read"] {
            baseline_xattrs_refused.with_label_values(&[reason]);
        }
        let build = IntGaugeVec::new(
            Opts::new("reflex_build_info", "Always 1; labels name the build."),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Every place an event can be lost shows up at 0 from the start, so
        // an alert rule on it works before the first loss.
        for reason in reflex_wire::LossReason::ALL {
            for family in reflex_wire::LossFamily::ALL {
                lost.with_label_values(&["kernel", reason.label(), family.label()]);
            }
        }
        for reason in ["truncated", "unknown_kind", "size_mismatch", "bad_field"] {
            lost.with_label_values(&["decode", reason, UNKNOWN_FAMILY]);
        }
        for result in ["ok", "rejected"] {
            reloads.with_label_values(&[result]);
        }
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric names");
        for collector in [
            Box::new(events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lost.clone()),
            Box::new(process_table.clone()),
            Box::new(event_queue.clone()),
            Box::new(stage_queue.clone()),
            Box::new(throttle_windows.clone()),
            Box::new(throttle_overflow.clone()),
            Box::new(kill_fuse_entries.clone()),
            Box::new(probes.clone()),
            Box::new(policy_matches.clone()),
            Box::new(actions.clone()),
            Box::new(kill_fuse_blown.clone()),
            Box::new(policies_loaded.clone()),
            Box::new(reloads.clone()),
            Box::new(action_latency.clone()),
            Box::new(deliveries.clone()),
            Box::new(queue_depth.clone()),
            Box::new(spool_entries.clone()),
            Box::new(alerts_dropped.clone()),
            Box::new(block_rule_errors.clone()),
            Box::new(exec_kill_entries.clone()),
            Box::new(exec_kill_errors.clone()),
            Box::new(exec_watch_overflows.clone()),
            Box::new(fanotify_marks.clone()),
            Box::new(fanotify_notices.clone()),
            Box::new(ancestry_truncated.clone()),
            Box::new(baselines_accepted.clone()),
            Box::new(baseline_versions_pruned.clone()),
            Box::new(evidence_dropped.clone()),
            Box::new(baseline_xattrs_refused.clone()),
            Box::new(build),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        let limits = super::limits::LimitMetrics::register(&registry);
        let kernel = super::kernel::KernelMetrics::register(&registry);
        let health = super::health::Health::register(&registry, policies_loaded.clone());
        let watch = super::watch::WatchMetrics::register(&registry);
        let alive = super::alive::Alive::register(&registry);
        let fs = crate::fsio::pool::PoolMetrics::register(&registry);
        let identity = crate::identity::IdentityMetrics::register(&registry);
        Self {
            registry,
            events,
            lost,
            process_table,
            event_queue,
            stage_queue,
            throttle_windows,
            throttle_overflow,
            kill_fuse_entries,
            probes,
            policy_matches,
            actions,
            kill_fuse_blown,
            policies_loaded,
            reloads,
            action_latency,
            deliveries,
            queue_depth,
            spool_entries,
            alerts_dropped,
            block_rule_errors,
            limits,
            kernel,
            health,
            alive,
            watch,
            exec_kill_entries,
            fanotify_marks,
            fanotify_notices,
            exec_kill_errors,
            exec_watch_overflows,
            ancestry_truncated,
            baselines_accepted,
            baseline_versions_pruned,
            evidence_dropped,
            baseline_xattrs_refused,
            fs,
            identity,
        }
    }

    /// Total events of `family` lost at `place` for `reason`.
    pub fn lost_count(&self, place: &str, reason: &str, family: &str) -> u64 {
        self.lost.with_label_values(&[place, reason, family]).get()
    }

    /// The exposition-format text of every metric.
    pub fn render(&self) -> String {
        let dropped = crate::logging::lines_dropped();
        let shown = &self.limits.log_lines_dropped;
        shown.inc_by(dropped.saturating_sub(shown.get()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text encoder writes UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
