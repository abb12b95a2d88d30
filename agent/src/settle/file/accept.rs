//! Authorised change: which `accept_from` policies a change's writers
//! satisfy, and making a settled change the new baseline of those policies,
//! here in the settler, which owns the baselines.
//!
//! A change is accepted only when every raw event merged into it came from
//! an authorised writer, and the baseline is the content exactly as it was
//! hashed. A raw event of an unauthorised writer that happened before that
//! read but arrives after it (the sensor runs behind the kernel) withdraws
//! the acceptance: its write may be inside the accepted content.
use std::{collections::HashMap, path::Path};

use globset::GlobSet;

use super::{
    FileSettler,
    baseline::{MAX_BASELINE_BYTES, NewVersion},
    history::How,
};
use crate::{
    events::{
        ProcessContext,
        clock::BootClock,
        file::{Accepted, AcceptedBy},
    },
    fsio::{self, FileState},
    logging::error_chain,
    policy::{
        PolicyRef, PolicySet,
        accept::Authority,
        model::Trigger,
        value::{PathGlob, glob_set},
    },
};

/// How far apart in time events may reach the agent out of order (the ring
/// buffer orders them by reservation, across CPUs).
const RACE_SLACK_NS: u64 = 50_000_000;

/// The `accept_from` policies of a set, with the paths each covers.
#[derive(Default)]
pub struct AcceptRules {
    rules: Vec<(PolicyRef, GlobSet)>,
}

impl AcceptRules {
    /// The rules of `set`.
    pub fn new(set: &PolicySet) -> Self {
        let rules = set
            .policies()
            .iter()
            .filter(|p| p.answers.accept_from.is_some())
            .filter_map(|p| match &p.trigger {
                Trigger::File { paths, .. } => {
                    Some((p.clone(), glob_set(paths.iter().map(PathGlob::glob))?))
                }
                _ => None,
            })
            .collect();
        Self { rules }
    }

    /// The policies covering `path` whose `accept_from` authorises `writer`,
    /// each with what made it so.
    pub fn authorised(&self, path: &str, writer: &ProcessContext) -> Vec<(String, Authority)> {
        self.rules
            .iter()
            .filter(|(_, paths)| paths.is_match(path))
            .filter_map(|(policy, _)| {
                let accept = policy.answers.accept_from.as_ref()?;
                Some((policy.name.clone(), accept.authorises(writer)?))
            })
            .collect()
    }

    /// Whether any rule covers `path`.
    pub fn covers(&self, path: &str) -> bool {
        self.rules.iter().any(|(_, paths)| paths.is_match(path))
    }
}

/// Who may still get a pending change accepted.
#[derive(Clone, Debug, Default)]
pub struct Writers {
    /// Policies every writer so far satisfied, with the first authority.
    pub authorised: Vec<(String, Authority)>,
    /// The last writer checked (a burst comes from one process).
    last: Option<(u32, Option<u64>)>,
    /// Policies whose fresh acceptance an earlier unauthorised write raced.
    pub raced: Vec<String>,
}

impl Writers {
    /// A writer that cannot be shown to have written this file: nothing
    /// pending is accepted.
    pub fn spoil(&mut self) {
        self.authorised.clear();
        self.last = None;
    }

    /// Narrows the authorised policies to those `writer` satisfies too.
    pub fn add(&mut self, rules: &AcceptRules, path: &str, writer: &ProcessContext, first: bool) {
        let id = (writer.pid, writer.start_ktime_ns);
        if !first && self.last == Some(id) {
            return;
        }
        self.last = Some(id);
        let now = rules.authorised(path, writer);
        if first {
            self.authorised = now;
        } else {
            self.authorised
                .retain(|(policy, _)| now.iter().any(|(p, _)| p == policy));
        }
    }
}

impl Writers {
    /// Whether `other`'s events all came from the one writer whose events
    /// these are, and that writer is authorised for something.
    pub fn same_authorised_writer(&self, other: &Writers) -> bool {
        self.last.is_some()
            && self.last == other.last
            && !self.authorised.is_empty()
            && !other.authorised.is_empty()
    }

    /// Takes in the writers of a later part of the same change: only the
    /// policies both authorised stay.
    pub fn merge(&mut self, later: Writers) {
        self.authorised
            .retain(|(policy, _)| later.authorised.iter().any(|(p, _)| p == policy));
        if self.authorised.is_empty() {
            self.last = None;
        } else {
            self.last = later.last;
        }
        for policy in later.raced {
            if !self.raced.contains(&policy) {
                self.raced.push(policy);
            }
        }
    }
}

/// An acceptance whose read the sensor's stream has not passed yet.
#[derive(Clone, Debug)]
pub struct Mark {
    /// Boot time of the read the baseline was taken from.
    pub read_ktime_ns: u64,
    /// Per policy, the version that was current before.
    pub previous: Vec<(String, u64)>,
}

/// A file's content and state read together, or `None` when it changed
/// during the read or is not a regular file.
pub fn read_version(path: &Path) -> Option<(Vec<u8>, String, FileState)> {
    let before = fsio::state(path).ok().flatten()?;
    let content = fsio::read_content(path, MAX_BASELINE_BYTES).ok()?;
    let after = fsio::state(path).ok().flatten()?;
    if before != after || content.len() as u64 != after.size {
        return None;
    }
    let sha256 = fsio::hash_reader(content.as_slice()).ok()?;
    Some((content, sha256, after))
}

/// What accepting a change did.
pub enum Outcome {
    /// The change is the new baseline of the policies named.
    Accepted(Accepted),
    /// The file is changing still, or cannot be kept; look again while
    /// the writer may still finish.
    Busy,
}

impl FileSettler {
    /// Makes the change to `path` the baseline of the `authorised`
    /// policies, written by `writer`.
    pub(super) fn accept(
        &mut self,
        path: &str,
        authorised: &[(String, Authority)],
        writer: &ProcessContext,
    ) -> Outcome {
        let Some(store) = self.baselines.as_mut() else {
            return Outcome::Busy;
        };
        let read_ktime_ns = BootClock::now_ns();
        let file = Path::new(path);
        let version = if file.exists() {
            match read_version(file) {
                Some(version) => Some(version),
                None => return Outcome::Busy,
            }
        } else {
            None
        };
        let xattrs = version.as_ref().and_then(|_| store.read_xattrs(file));
        let by = describe(writer, authorised.first().map(|(_, a)| a));
        let mut accepted = Accepted {
            policies: Vec::new(),
            before: None,
            after: version.as_ref().map(|(_, sha, _)| sha.clone()),
            by: authorised.first().map(|(_, a)| AcceptedBy {
                pid: a.pid,
                path: a.path.clone(),
            }),
        };
        let mut previous = Vec::new();
        for (policy, _) in authorised {
            let before = store.get(policy, path).cloned();
            let done = match &version {
                Some((content, sha256, state)) => store
                    .put(
                        policy,
                        path,
                        NewVersion {
                            content,
                            sha256,
                            state,
                            how: How::Accepted,
                            by: Some(&by),
                            source: None,
                            xattrs: xattrs.as_ref(),
                        },
                    )
                    .map(|_| ()),
                None => store.retire(policy, path),
            };
            if let Err(err) = done {
                tracing::error!(policy, path, error = %error_chain(&err), "accepting a change as the baseline");
                continue;
            }
            if let Some(before) = before {
                accepted.before.get_or_insert(before.sha256.clone());
                previous.push((policy.clone(), before.version));
            }
            if let Some(metrics) = &self.metrics {
                metrics
                    .baselines_accepted
                    .with_label_values(&[policy.as_str(), "writer"])
                    .inc();
            }
            tracing::info!(
                policy,
                path,
                by,
                sha256 = accepted.after,
                "change accepted as the baseline"
            );
            accepted.policies.push(policy.clone());
        }
        self.marks.insert(
            path.to_string(),
            Mark {
                read_ktime_ns,
                previous,
            },
        );
        Outcome::Accepted(accepted)
    }

    /// Puts back the baselines a raced acceptance of `path` replaced.
    pub(super) fn withdraw(&mut self, path: &str, policies: &[String]) {
        let (Some(mark), Some(store)) = (self.marks.remove(path), self.baselines.as_mut()) else {
            return;
        };
        for (policy, version) in mark.previous.iter().filter(|(p, _)| policies.contains(p)) {
            match store.reinstate(policy, path, &version.to_string(), How::Withdrawn) {
                Ok(_) => {
                    tracing::warn!(
                        policy,
                        path,
                        "an unauthorised write raced an accepted change; the acceptance is withdrawn"
                    );
                    if let Some(metrics) = &self.metrics {
                        metrics
                            .baselines_accepted
                            .with_label_values(&[policy.as_str(), "withdrawn"])
                            .inc();
                    }
                }
                Err(err) => {
                    tracing::error!(policy, path, error = %error_chain(&err), "withdrawing an acceptance")
                }
            }
        }
    }

    /// Forgets acceptances the stream has passed: no event from before
    /// their read can come any more.
    pub fn observe(&mut self, ktime_ns: u64) {
        if !self.marks.is_empty() {
            let passed = ktime_ns.saturating_sub(RACE_SLACK_NS);
            self.marks.retain(|_, m| m.read_ktime_ns >= passed);
        }
    }
}

/// The writer, and what made it authorised, for the baseline's `by`.
fn describe(writer: &ProcessContext, authority: Option<&Authority>) -> String {
    let exe = writer.exe.as_deref().unwrap_or(&writer.comm);
    match authority.and_then(|a| a.path.as_deref().map(|p| (a.pid, p))) {
        Some((pid, path)) if pid != writer.pid => {
            format!("{exe} (pid {}, under {path}, pid {pid})", writer.pid)
        }
        _ => format!("{exe} (pid {})", writer.pid),
    }
}

/// Acceptances not yet passed by the stream, per path.
pub type Marks = HashMap<String, Mark>;

/// The policies whose fresh acceptance of `path` a raw event at `ktime_ns`
/// by someone not authorised for them may have raced.
pub(super) fn raced_policies(
    marks: &Marks,
    path: &str,
    ktime_ns: u64,
    writers: &Writers,
) -> Vec<String> {
    let Some(mark) = marks.get(path) else {
        return Vec::new();
    };
    if ktime_ns >= mark.read_ktime_ns {
        return Vec::new();
    }
    mark.previous
        .iter()
        .map(|(p, _)| p.clone())
        .filter(|p| !writers.authorised.iter().any(|(a, _)| a == p))
        .collect()
}
