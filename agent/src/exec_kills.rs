//! The exec family's in-kernel kill as the agent drives it: the exec probe
//! kills a process at `sched_process_exec` when the executable the kernel
//! loaded is in `EXEC_KILL`, and this table keeps that map equal to the
//! identities of the files the enforcing exec `kill` policies cover, minus
//! those of policies whose kill fuse blew.
//!
//! Two stages inform it, each by a [`Notice`] on one channel: the settler,
//! which knows which files the policies cover (it expands globs over the
//! files that exist and follows them as they change), and the engine, whose
//! kill fuse decides that a policy must stop killing. Both messages flow
//! forward, out of the pipeline into this owner, so no stage waits on
//! another; sharing one channel keeps them in order, so a fuse notice about
//! a set always arrives after that set's targets.
use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use nix::sys::signal::Signal;
use reflex_wire::{FileKey, process::exec_kill};
use tokio::sync::mpsc;

use crate::{
    events::FileId,
    loader::exec_kill::ExecKillMap,
    policy::{Action, Mode, Policy, PolicySet, model::Trigger, spec::KillTarget},
    telemetry::Metrics,
};

/// What the table is told.
#[derive(Debug)]
pub enum Notice {
    /// From the settler: the files each kernel-enforced policy of `set`
    /// covers now, complete (a new set, or files that appeared or changed).
    Targets {
        /// The policy set the targets were computed from.
        set: Arc<PolicySet>,
        /// Policy name → identities of the files it covers.
        policies: BTreeMap<String, HashSet<FileId>>,
    },
    /// From the engine: `policy` of `set` blew its kill fuse; the kernel
    /// stops killing for it until another set is loaded.
    FuseBlown {
        /// The set the engine judged by.
        set: Arc<PolicySet>,
        /// Policy name.
        policy: String,
    },
}

/// Sends notices to the table; a send fails only once it has stopped.
pub type NoticeSender = mpsc::UnboundedSender<Notice>;

/// Whether the kernel carries out `policy`'s kill at exec: an enforcing
/// exec policy with paths, without `when`/`unless` (the probe tests no
/// process conditions) and with a SIGKILL `kill` of the process itself
/// (another signal could be blocked across exec and run the program after
/// all). Other kill policies are carried out from user space.
pub fn kernel_enforced(policy: &Policy) -> bool {
    policy.mode == Mode::Enforce
        && matches!(&policy.trigger, Trigger::Exec { paths } if !paths.is_empty())
        && policy.when.is_none()
        && policy.unless.is_none()
        && policy.actions.iter().any(|a| {
            matches!(
                a,
                Action::Kill {
                    signal: Signal::SIGKILL,
                    target: KillTarget::Process,
                }
            )
        })
}

/// The `EXEC_KILL` map and what decides its content.
pub struct ExecKillTable {
    map: Option<ExecKillMap>,
    metrics: Option<Metrics>,
    set: Option<Arc<PolicySet>>,
    targets: BTreeMap<String, HashSet<FileId>>,
    blown: HashSet<String>,
    applied: HashSet<FileId>,
}

impl ExecKillTable {
    /// A table writing to `map` (none in unit tests), counting in `metrics`.
    pub fn new(map: Option<ExecKillMap>, metrics: Option<Metrics>) -> Self {
        Self {
            map,
            metrics,
            set: None,
            targets: BTreeMap::new(),
            blown: HashSet::new(),
            applied: HashSet::new(),
        }
    }

    /// Identities the kernel kills now.
    pub fn armed(&self) -> &HashSet<FileId> {
        &self.applied
    }

    /// Applies every notice already queued on `notices`, without waiting:
    /// the first targets are in the kernel before the agent says it runs.
    pub fn drain(&mut self, notices: &mut mpsc::UnboundedReceiver<Notice>) {
        while let Ok(notice) = notices.try_recv() {
            self.apply(notice);
        }
    }

    /// Applies notices until every sender is gone.
    pub async fn run(mut self, mut notices: mpsc::UnboundedReceiver<Notice>) {
        while let Some(notice) = notices.recv().await {
            self.apply(notice);
        }
    }

    /// Takes one notice into account and brings the kernel map up to date.
    pub fn apply(&mut self, notice: Notice) {
        match notice {
            Notice::Targets { set, policies } => {
                let same_set = self.set.as_ref().is_some_and(|s| Arc::ptr_eq(s, &set));
                if !same_set {
                    // A new set re-arms every fuse, as in the engine.
                    self.blown.clear();
                    self.set = Some(set);
                }
                self.targets = policies;
            }
            Notice::FuseBlown { set, policy } => {
                // A notice about an older set: that set's fuses are gone.
                if !self.set.as_ref().is_some_and(|s| Arc::ptr_eq(s, &set))
                    || !self.targets.contains_key(&policy)
                    || !self.blown.insert(policy.clone())
                {
                    return;
                }
                tracing::warn!(
                    policy,
                    "kill fuse blown: the kernel no longer kills at exec for this policy until reload"
                );
            }
        }
        self.sync();
    }

    /// Makes the kernel map the union of the armed policies' targets, by
    /// difference: an identity two policies share stays while either kills.
    fn sync(&mut self) {
        let wanted: HashSet<FileId> = self
            .targets
            .iter()
            .filter(|(policy, _)| !self.blown.contains(*policy))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        let key = |id: &FileId| FileKey {
            dev: id.dev,
            _pad: 0,
            ino: id.ino,
        };
        let mut applied = HashSet::with_capacity(wanted.len());
        for id in self.applied.difference(&wanted) {
            if let Some(map) = self.map.as_mut()
                && let Err(err) = map.remove(&key(id))
            {
                tracing::debug!(%err, dev = id.dev, ino = id.ino, "removing an exec kill entry");
            }
        }
        for id in &wanted {
            if self.applied.contains(id) {
                applied.insert(*id);
                continue;
            }
            let result = match self.map.as_mut() {
                Some(map) => map.insert(key(id), exec_kill::KILL, 0),
                None => Ok(()),
            };
            match result {
                Ok(()) => {
                    applied.insert(*id);
                }
                Err(err) => {
                    // The user-space kill still answers these execs, later.
                    if let Some(metrics) = &self.metrics {
                        metrics.exec_kill_errors.inc();
                    }
                    tracing::error!(%err, dev = id.dev, ino = id.ino, "arming an in-kernel exec kill");
                }
            }
        }
        self.applied = applied;
        if let Some(metrics) = &self.metrics {
            metrics.exec_kill_entries.set(self.applied.len() as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::{compile, load};

    fn set(text: &str) -> Arc<PolicySet> {
        let (sources, mut errors) = load::parse_source(Path::new("t.yaml"), text);
        let policies = compile::compile_all(sources, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        Arc::new(PolicySet::new(policies))
    }

    fn id(ino: u64) -> FileId {
        FileId { dev: 1, ino }
    }

    fn targets(set: &Arc<PolicySet>, entries: &[(&str, &[u64])]) -> Notice {
        Notice::Targets {
            set: set.clone(),
            policies: entries
                .iter()
                .map(|(p, inos)| (p.to_string(), inos.iter().map(|&i| id(i)).collect()))
                .collect(),
        }
    }

    #[test]
    fn only_plain_enforcing_sigkill_exec_policies_are_kernel_enforced() {
        let set = set(r#"
name: plain
mode: enforce
on: { exec: { paths: ["/usr/bin/nc*"] } }
do: [kill, alert]
---
name: monitor
on: { exec: { paths: ["/usr/bin/nc*"] } }
do: [kill]
---
name: conditional
mode: enforce
on: { exec: { paths: ["/usr/bin/nc*"] } }
unless: { process: { parent_exe: ["/usr/sbin/sshd"] } }
do: [kill]
---
name: term
mode: enforce
on: { exec: { paths: ["/usr/bin/nc*"] } }
do: [{ kill: { signal: TERM } }]
---
name: parent
mode: enforce
on: { exec: { paths: ["/usr/bin/nc*"] } }
do: [{ kill: { target: parent } }]
---
name: everything
mode: enforce
on: { exec: {} }
do: [kill]
"#);
        let enforced: Vec<&str> = set
            .policies()
            .iter()
            .filter(|p| kernel_enforced(p))
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(enforced, ["plain"]);
    }

    #[test]
    fn a_blown_fuse_disarms_only_its_policy_until_the_next_set() {
        let first = set("name: a\non: { exec: {} }\ndo: [alert]\n");
        let mut table = ExecKillTable::new(None, None);
        table.apply(targets(&first, &[("a", &[1, 2]), ("b", &[2, 3])]));
        assert_eq!(table.armed().len(), 3);

        table.apply(Notice::FuseBlown {
            set: first.clone(),
            policy: "b".into(),
        });
        let armed: HashSet<FileId> = [id(1), id(2)].into();
        assert_eq!(table.armed(), &armed, "2 stays: policy a still kills it");

        table.apply(targets(&first, &[("a", &[1, 2, 4]), ("b", &[2, 3, 5])]));
        assert!(
            !table.armed().contains(&id(5)),
            "new files of a blown policy stay unarmed"
        );

        let second = set("name: a\non: { exec: {} }\ndo: [alert]\n");
        table.apply(targets(&second, &[("a", &[1]), ("b", &[3])]));
        let armed: HashSet<FileId> = [id(1), id(3)].into();
        assert_eq!(table.armed(), &armed, "a reload re-arms every fuse");
        table.apply(Notice::FuseBlown {
            set: first,
            policy: "a".into(),
        });
        assert_eq!(
            table.armed(),
            &armed,
            "a notice about the old set is ignored"
        );
        table.apply(Notice::FuseBlown {
            set: second,
            policy: "a".into(),
        });
        assert_eq!(table.armed(), &HashSet::from([id(3)]));
    }
}
