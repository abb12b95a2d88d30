//! Reverts on the filesystem pool: the actions stage hands a revert to a
//! worker and goes on with other events (kills, alerts, other files); the
//! verdict waits here, parked, and its alert is written when the revert
//! is done or its deadline passed (the alert then says it could not
//! finish). The settler hears of the new file from the worker itself.
use std::{path::PathBuf, sync::Arc};

use tokio::sync::mpsc::UnboundedSender;

use super::{Executor, evidence::EvidenceStore, revert};
use crate::{
    engine::plan::Plan,
    events::{Body, Record, file::File},
    fsio::{
        self,
        pool::{JobKey, PoolError},
    },
    policy::{Action, PolicyRef, model::Trigger},
    settle::Followup,
    sinks::alert::{ActionResult, Evidence},
};

/// A verdict whose actions are carried out but for `waiting` reverts.
pub(super) struct Parked {
    pub(super) policy: PolicyRef,
    pub(super) record: Record,
    pub(super) context: serde_json::Value,
    pub(super) plan: Plan,
    pub(super) results: Vec<ActionResult>,
    pub(super) evidence: Option<Evidence>,
    pub(super) waiting: usize,
}

/// What a revert needs, owned, to run on a worker.
pub(super) struct RevertJob {
    file: File,
    policy: PolicyRef,
    state_dir: PathBuf,
    evidence: Option<Arc<EvidenceStore>>,
    followups: Option<UnboundedSender<Followup>>,
}

/// A revert's outcome, back at the actions stage.
pub(super) struct RevertDone {
    ticket: u64,
    index: usize,
    outcome: Result<(Result<String, String>, Option<Evidence>), PoolError>,
    path: Option<String>,
}

/// Tells the settler how a revert of `path` ended.
pub(super) fn follow_up(tx: &UnboundedSender<Followup>, path: &str, restored: bool) {
    let path = path.to_string();
    // What the revert left, seen from here: the settler must not wait on
    // the file's filesystem to learn it.
    let seen = fsio::state(std::path::Path::new(&path)).ok();
    // The settler outlives this stage; a send fails only at shutdown.
    let _ = tx.send(if restored {
        Followup::Restored {
            path,
            state: seen.flatten(),
        }
    } else {
        Followup::RevertFailed { path, seen }
    });
}

impl RevertJob {
    fn run(self) -> (Result<String, String>, Option<Evidence>) {
        revert_and_follow_up(
            &self.policy,
            &self.file,
            &self.state_dir,
            self.evidence.as_deref(),
            self.followups.as_ref(),
        )
    }
}

/// Reverts `file` as `policy` says, keeping evidence in `evidence`, and
/// tells the settler (`followups`) how it ended: the one revert a pool's
/// worker and the stage itself (no pool) both run.
pub(super) fn revert_and_follow_up(
    policy: &crate::policy::Policy,
    file: &File,
    state_dir: &std::path::Path,
    evidence: Option<&EvidenceStore>,
    followups: Option<&UnboundedSender<Followup>>,
) -> (Result<String, String>, Option<Evidence>) {
    let keep = evidence.map(|store| (store, policy.answers.evidence));
    let covers = |path: &str| match &policy.trigger {
        Trigger::File { paths, .. } => paths.iter().any(|g| g.matcher().is_match(path)),
        _ => false,
    };
    let (done, kept) = revert::revert(file, (&policy.name, &covers), state_dir, keep, followups);
    if let (Some(tx), Some(path)) = (followups, &file.path) {
        follow_up(tx, path, done.is_ok());
    }
    (done, kept)
}

impl Executor {
    /// The revert `action` of `policy` on `record`, to run on the pool;
    /// `None` when it runs here (no pool) or is not a revert of a file.
    pub(super) fn revert_job(
        &self,
        policy: &PolicyRef,
        action: &Action,
        record: &Record,
    ) -> Option<RevertJob> {
        let (Action::Revert { .. }, Some(_), Some(state_dir), Body::File(file)) =
            (action, &self.pool, &self.state_dir, &record.body)
        else {
            return None;
        };
        Some(RevertJob {
            file: file.clone(),
            policy: policy.clone(),
            state_dir: state_dir.clone(),
            evidence: self.evidence.clone(),
            followups: self.followups.clone(),
        })
    }

    /// Parks `parked` and starts its reverts (`jobs`, with the positions
    /// of their results).
    pub(super) fn park(&mut self, parked: Parked, jobs: Vec<(usize, RevertJob)>) {
        let Some(pool) = self.pool.clone() else {
            return;
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.parked.insert(ticket, parked);
        for (index, job) in jobs {
            let path = job.file.path.clone();
            let key = JobKey {
                path: path.clone().unwrap_or_default(),
                dev: job.file.dev,
            };
            let tx = self.reverted_tx.clone();
            pool.submit(
                key,
                "revert",
                move || job.run(),
                move |outcome| {
                    // This stage outlives the pool's answers but at shutdown.
                    let _ = tx.send(RevertDone {
                        ticket,
                        index,
                        outcome,
                        path,
                    });
                },
            );
        }
    }

    /// Takes a revert's outcome; writes the verdict's alert once its last
    /// revert is in.
    pub(super) fn reverted(&mut self, done: RevertDone) {
        let RevertDone {
            ticket,
            index,
            outcome,
            path,
        } = done;
        let Some(parked) = self.parked.get(&ticket) else {
            return;
        };
        let (result, evidence) = match outcome {
            Ok(done) => done,
            Err(err) => {
                if let (Some(tx), Some(path)) = (&self.followups, &path) {
                    // What is there is unknown: the settler looks again.
                    let _ = tx.send(Followup::RevertFailed {
                        path: path.clone(),
                        seen: None,
                    });
                }
                (Err(format!("the revert could not finish: {err}")), None)
            }
        };
        let result = self.account(&parked.policy, "revert", &parked.record, result);
        let Some(parked) = self.parked.get_mut(&ticket) else {
            return;
        };
        parked.results[index] = result;
        if evidence.is_some() {
            parked.evidence = evidence;
        }
        parked.waiting -= 1;
        if parked.waiting == 0
            && let Some(parked) = self.parked.remove(&ticket)
        {
            self.finish(parked);
        }
    }
}
