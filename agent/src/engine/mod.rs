//! The engine: finished events from the settler are evaluated against the
//! policy set in force and each match is planned (mode, throttle, kill
//! fuse). A new set arrives in-band from the settler, in each lane, so no
//! event is judged by half a set ([`lanes`]). `reflex run` hands the plans to actions; `reflex replay`
//! prints them.
pub mod fuse;
pub mod lanes;
pub mod plan;
pub mod reload;
pub mod throttle;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{
    events::Record,
    exec_kills::{Notice, NoticeSender},
    policy::{PolicyRef, PolicySet, model::Trigger},
    telemetry::Metrics,
};
use plan::{Plan, Planner};

/// One matched policy and what it decided.
#[derive(Debug)]
pub struct Verdict {
    /// The policy that matched.
    pub policy: PolicyRef,
    /// What it does about the event.
    pub plan: Plan,
}

/// An event with every verdict on it, for actions to carry out.
#[derive(Debug)]
pub struct Judged {
    /// The event.
    pub record: Record,
    /// One per matching policy, in load order.
    pub verdicts: Vec<Verdict>,
}

/// Evaluation and planning state.
pub struct Engine {
    set: Arc<PolicySet>,
    planner: Planner,
    metrics: Option<Metrics>,
    exec_kills: Option<NoticeSender>,
    file_kills: Option<mpsc::UnboundedSender<crate::settle::Followup>>,
}

impl Engine {
    /// An engine judging by `set`, with kill fuses that blow past
    /// `fuse_limit` executables a minute; decisions are counted in
    /// `metrics` when given.
    pub fn new(set: Arc<PolicySet>, fuse_limit: usize, metrics: Option<Metrics>) -> Self {
        let engine = Self {
            set,
            planner: Planner::new(fuse_limit),
            metrics,
            exec_kills: None,
            file_kills: None,
        };
        engine.show_fuses();
        engine
    }

    /// Shows each killing policy's fuse counter at 0, so that an alert
    /// rule and a dashboard find it before the first fuse blows.
    fn show_fuses(&self) {
        let Some(metrics) = &self.metrics else { return };
        for policy in self.set.policies() {
            if policy.actions.iter().any(|a| a.name() == "kill") {
                metrics
                    .kill_fuse_blown
                    .with_label_values(&[policy.name.as_str()]);
            }
        }
    }

    /// Tells `kills` (the exec kill table) when an exec policy's kill fuse
    /// blows, so the kernel stops killing for it too.
    pub fn with_exec_kills(mut self, kills: NoticeSender) -> Self {
        self.exec_kills = Some(kills);
        self
    }

    /// Tells the settler (`followups`) when a file policy's kill fuse
    /// blows, so the kernel stops killing at open for it too.
    pub fn with_file_kills(
        mut self,
        followups: mpsc::UnboundedSender<crate::settle::Followup>,
    ) -> Self {
        self.file_kills = Some(followups);
        self
    }

    /// Takes a new policy set into use and re-arms the kill fuses.
    pub fn swap(&mut self, set: Arc<PolicySet>) {
        if !Arc::ptr_eq(&set, &self.set) {
            self.set = set;
            self.planner.reset_fuses();
            if let Some(metrics) = &self.metrics {
                metrics.kill_fuse_entries.set(0);
            }
            self.show_fuses();
        }
    }

    /// The verdicts of every policy `record` matches.
    pub fn judge(&mut self, record: &Record) -> Vec<Verdict> {
        let verdicts = self.judge_each(record);
        if let Some(metrics) = &self.metrics
            && !verdicts.is_empty()
        {
            let (windows, overflowed) = self.planner.throttle_state();
            metrics.throttle_windows.set(windows as i64);
            let seen = metrics.throttle_overflow.get();
            metrics
                .throttle_overflow
                .inc_by(overflowed.saturating_sub(seen));
            metrics
                .kill_fuse_entries
                .set(self.planner.fuse_entries() as i64);
        }
        verdicts
    }

    fn judge_each(&mut self, record: &Record) -> Vec<Verdict> {
        self.set
            .evaluate(record)
            .into_iter()
            .map(|policy| {
                let plan = self.planner.plan(&policy, record);
                if plan.fuse_blew
                    && matches!(policy.trigger, Trigger::Exec { .. })
                    && let Some(kills) = &self.exec_kills
                {
                    // Fails only when the table has stopped (shutdown).
                    let _ = kills.send(Notice::FuseBlown {
                        set: self.set.clone(),
                        policy: policy.name.clone(),
                    });
                }
                if plan.fuse_blew
                    && matches!(policy.trigger, Trigger::File { .. })
                    && let Some(followups) = &self.file_kills
                {
                    // Fails only when the settler has stopped (shutdown).
                    let _ = followups.send(crate::settle::Followup::KillsOff {
                        set: self.set.clone(),
                        policy: policy.name.clone(),
                    });
                }
                if let Some(metrics) = &self.metrics {
                    metrics
                        .policy_matches
                        .with_label_values(&[policy.name.as_str(), plan.decision.mode.as_str()])
                        .inc();
                    if plan.fuse_blew {
                        metrics
                            .kill_fuse_blown
                            .with_label_values(&[policy.name.as_str()])
                            .inc();
                    }
                }
                Verdict { policy, plan }
            })
            .collect()
    }
}
