//! Taking a policy set into use: watching what it covers, recording
//! missing baselines, and answering files that changed while no agent
//! watched them (drift) as each policy's `on_drift` says.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use super::{
    FileSettler,
    accept::{AcceptRules, read_version},
    after_state,
    baseline::{BaselineStore, NewVersion},
    history::How,
    snapshots,
};
use crate::{
    events::{
        Body, Kind, ProcessContext, Record,
        clock::BootClock,
        file::{Accepted, File, FileChange},
    },
    fsio,
    logging::error_chain,
    policy::{
        Action, PolicySet,
        accept::OnDrift,
        model::Trigger,
        value::{PathGlob, glob_set},
    },
    telemetry::Metrics,
};

impl FileSettler {
    /// Watches what `set` covers, records missing baselines, and returns a
    /// `drift` record for each file that differs from its baseline (changes
    /// made while the agent was not running). Under `on_drift: accept` the
    /// file as found becomes the policy's baseline first.
    ///
    /// A file with no baseline is recorded as found when its policy takes
    /// the glob that covers it into use for the first time; under a glob
    /// the policy already had in force ([`BaselineStore::known`]) it was
    /// created behind the agent's back: a `drift` record with `create` in
    /// its changes and no baseline for that policy, which a `revert`
    /// removes, `on_drift: accept` makes the baseline, and `report` leaves.
    pub fn configure(&mut self, set: &PolicySet) -> Vec<Record> {
        self.watch.configure(set);
        self.accept = AcceptRules::new(set);
        self.marks.clear();
        let Some(baselines) = self.baselines.as_mut() else {
            return Vec::new();
        };
        baselines.refresh();
        // Per drifted path, the policies that accepted the drift.
        let mut drifted: BTreeMap<String, Accepted> = BTreeMap::new();
        // Paths created while no agent ran, under a policy already in force.
        let mut created: BTreeSet<String> = BTreeSet::new();
        for policy in set.policies() {
            let Trigger::File { paths, .. } = &policy.trigger else {
                continue;
            };
            let Some(source) = policy.actions.iter().find_map(|a| match a {
                Action::Revert { source } => Some(source.clone()),
                _ => None,
            }) else {
                continue;
            };
            let Some(matcher) = glob_set(paths.iter().map(PathGlob::glob)) else {
                continue;
            };
            let known = glob_set(
                baselines
                    .known(&policy.name, paths)
                    .into_iter()
                    .map(PathGlob::glob),
            );
            // A glob's walk finds only the files there now; one deleted
            // while no agent ran is watched by its baseline.
            let recorded: Vec<String> = baselines
                .list()
                .filter(|(p, path, _)| *p == policy.name && matcher.is_match(path))
                .map(|(_, path, _)| path.to_string())
                .collect();
            self.watch.include(recorded);
            let covered: Vec<String> = self
                .watch
                .paths()
                .filter(|p| matcher.is_match(p))
                .map(str::to_string)
                .collect();
            for path in covered {
                let file = Path::new(&path);
                match fsio::remove_stale_temps(file) {
                    Ok(0) => {}
                    Ok(removed) => tracing::warn!(
                        path,
                        removed,
                        "removed temporary files an interrupted revert left"
                    ),
                    Err(err) => {
                        tracing::debug!(path, error = %error_chain(&err), "looking for interrupted reverts")
                    }
                }
                if self.pending.contains_key(&path) {
                    // A change in progress is settled as it completes.
                    continue;
                }
                match baselines.get(&policy.name, &path) {
                    Some(b) if !b.matches(file).unwrap_or(false) => {
                        let entry = drifted.entry(path.clone()).or_default();
                        if policy.answers.on_drift == OnDrift::Accept {
                            let before = b.sha256.clone();
                            if let Some(after) = accept_drift(baselines, &policy.name, &path) {
                                entry.before.get_or_insert(before);
                                entry.after = Some(after);
                                entry.policies.push(policy.name.clone());
                                count_drift_accepted(self.metrics.as_ref(), &policy.name);
                            }
                        }
                    }
                    Some(_) => {}
                    None if fsio::state(file).ok().flatten().is_none() => tracing::warn!(
                        policy = policy.name,
                        path,
                        "watched file is missing and has no baseline"
                    ),
                    None if known.as_ref().is_some_and(|k| k.is_match(&path)) => {
                        // The policy was in force here and never saw this
                        // file: it appeared while no agent watched.
                        tracing::warn!(
                            policy = policy.name,
                            path,
                            on_drift = ?policy.answers.on_drift,
                            "a file with no baseline appeared while the agent was not running"
                        );
                        created.insert(path.clone());
                        let entry = drifted.entry(path.clone()).or_default();
                        if policy.answers.on_drift == OnDrift::Accept
                            && let Some(after) = accept_drift(baselines, &policy.name, &path)
                        {
                            entry.after = Some(after);
                            entry.policies.push(policy.name.clone());
                            count_drift_accepted(self.metrics.as_ref(), &policy.name);
                        }
                    }
                    None => match baselines.record(&policy.name, file, source.as_deref()) {
                        Ok(b) => tracing::info!(
                            policy = policy.name,
                            path,
                            sha256 = b.sha256,
                            "baseline recorded"
                        ),
                        Err(err) => {
                            tracing::error!(policy = policy.name, path, error = %error_chain(&err), "recording a baseline")
                        }
                    },
                }
            }
            if let Err(err) = baselines.remember(&policy.name, paths) {
                tracing::error!(policy = policy.name, error = %error_chain(&err), "remembering the paths a policy covers");
            }
        }
        drifted
            .into_iter()
            .map(|(path, accepted)| {
                let created = created.contains(&path);
                drift_record(
                    &path,
                    baselines,
                    created,
                    (!accepted.policies.is_empty()).then_some(accepted),
                )
            })
            .collect()
    }
}

/// Counts a file `policy` took as its baseline under `on_drift: accept`.
fn count_drift_accepted(metrics: Option<&Metrics>, policy: &str) {
    if let Some(metrics) = metrics {
        metrics
            .baselines_accepted
            .with_label_values(&[policy, "drift"])
            .inc();
    }
}

/// Makes the file at `path` as found the baseline of `policy`; returns its
/// content hash.
fn accept_drift(store: &mut BaselineStore, policy: &str, path: &str) -> Option<String> {
    let Some((content, sha256, state)) = read_version(Path::new(path)) else {
        tracing::warn!(
            policy,
            path,
            "on_drift: accept, but the file is gone or changing; reported as drift"
        );
        return None;
    };
    let xattrs = store.read_xattrs(Path::new(path));
    let done = store.put(
        policy,
        path,
        NewVersion {
            content: &content,
            sha256: &sha256,
            state: &state,
            how: How::Drift,
            by: None,
            source: None,
            xattrs: xattrs.as_ref(),
        },
    );
    match done {
        Ok(_) => {
            tracing::info!(
                policy,
                path,
                sha256,
                "drift accepted as the baseline (on_drift: accept)"
            );
            Some(sha256)
        }
        Err(err) => {
            tracing::error!(policy, path, error = %error_chain(&err), "accepting drift");
            None
        }
    }
}

/// A record for a file found changed (or, when `created`, come into being)
/// while no process could be watched, with its baselines (after any
/// acceptance) and its state now.
fn drift_record(
    path: &str,
    baselines: &BaselineStore,
    created: bool,
    accepted: Option<Accepted>,
) -> Record {
    let ktime_ns = BootClock::now_ns();
    let mut changes = vec![FileChange::Drift];
    if created {
        changes.push(FileChange::Create);
    }
    if accepted.is_some() {
        changes.push(FileChange::Accepted);
    }
    Record {
        time: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        ktime_ns,
        kind: Kind::File,
        process: ProcessContext::default(),
        body: Body::File(File {
            path: Some(path.to_string()),
            change: Some(FileChange::Drift),
            changes,
            fd: -1,
            baseline: snapshots(baselines, path),
            after: after_state(
                Path::new(path),
                fsio::state(Path::new(path)).ok().flatten().as_ref(),
                true,
            ),
            accepted: accepted.map(Box::new),
            ..File::default()
        }),
    }
}
