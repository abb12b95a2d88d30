//! The agent's metric families. Every place an event can be lost has a counter.
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// All metric families, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry that `/metrics` renders.
    pub registry: Registry,
    /// `reflex_events_total{family,kind}`: events decoded.
    pub events: IntCounterVec,
    /// `reflex_events_lost_total{place,reason}`: events that never reached a policy.
    pub lost: IntCounterVec,
    /// `reflex_process_table_entries`: processes held in the process table.
    pub process_table: IntGauge,
    /// `reflex_probe_attached{probe}`: 1 for each attached probe.
    pub probes: IntGaugeVec,
    /// `reflex_policy_matches_total{policy,mode}`: events a policy matched.
    pub policy_matches: IntCounterVec,
    /// `reflex_actions_total{action,result}`: actions carried out.
    pub actions: IntCounterVec,
    /// `reflex_policies_loaded`: policies in the running set.
    pub policies_loaded: IntGauge,
    /// `reflex_policy_reloads_total{result}`: reload attempts.
    pub reloads: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every family.
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
                "Events lost before evaluation, by place (kernel, decode, queue) and reason.",
            ),
            &["place", "reason"],
        )
        .expect("valid metric");
        let process_table = IntGauge::new(
            "reflex_process_table_entries",
            "Processes held in the agent's process table.",
        )
        .expect("valid metric");
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
        for collector in [
            Box::new(events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lost.clone()),
            Box::new(process_table.clone()),
            Box::new(probes.clone()),
            Box::new(policy_matches.clone()),
            Box::new(actions.clone()),
            Box::new(policies_loaded.clone()),
            Box::new(reloads.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Self {
            registry,
            events,
            lost,
            process_table,
            probes,
            policy_matches,
            actions,
            policies_loaded,
            reloads,
        }
    }

    /// Total events lost at `place` for `reason`.
    pub fn lost_count(&self, place: &str, reason: &str) -> u64 {
        self.lost.with_label_values(&[place, reason]).get()
    }

    /// The exposition-format text of every family.
    pub fn render(&self) -> String {
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
