//! The exec family's in-kernel kill as the agent drives it: the exec probe
//! kills a process at `sched_process_exec` when the executable the kernel
//! loaded is in `EXEC_KILL` (by identity) or `EXEC_KILL_NAMES` (by name in
//! its directory), and this table keeps those maps equal to what the
//! enforcing exec `kill` policies cover, minus the policies whose kill fuse
//! blew.
//!
//! Two stages inform it, each by a [`Notice`] on one channel: the settler,
//! which knows which files the policies cover (it expands globs over the
//! files that exist and follows them as they change), and the engine, whose
//! kill fuse decides that a policy must stop killing. Both messages flow
//! forward, out of the pipeline into this owner, so no stage waits on
//! another; sharing one channel keeps them in order, so a fuse notice about
//! a set always arrives after that set's targets.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use nix::sys::signal::Signal;
use reflex_wire::{
    FileKey,
    file::{NAME_HASH_START, name_hash_step},
    process::{EXEC_NAME_MAX, ExecName, exec_kill},
};
use tokio::sync::mpsc;

use crate::{
    events::FileId,
    loader::exec_kill::ExecKillMaps,
    policy::{Action, Mode, Policy, PolicySet, model::Trigger, spec::KillTarget},
    telemetry::Metrics,
};

/// A name under which the kernel kills in a directory, whatever the file's
/// identity: the exact name of a literal path, or the start of the names a
/// `dir/start*` glob covers. It closes the gap between a file landing under
/// a covered name and the agent taking its identity in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NameRule {
    /// Identity of the directory.
    pub dir: FileId,
    /// The name, or its start (at most `EXEC_NAME_MAX` bytes).
    pub name: Vec<u8>,
    /// Whether any name starting with `name` counts.
    pub prefix: bool,
}

/// What one kernel-enforced policy covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Covered {
    /// Identities of the files it names that exist.
    pub files: HashSet<FileId>,
    /// Names it covers in directories that exist.
    pub names: HashSet<NameRule>,
}

/// What the table is told.
#[derive(Debug)]
pub enum Notice {
    /// From the settler: what each kernel-enforced policy of `set` covers
    /// now, complete (a new set, or files that appeared or changed).
    Targets {
        /// The policy set the targets were computed from.
        set: Arc<PolicySet>,
        /// Policy name → what it covers.
        policies: BTreeMap<String, Covered>,
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

/// The exec kill maps and what decides their content.
pub struct ExecKillTable {
    maps: Option<ExecKillMaps>,
    metrics: Option<Metrics>,
    set: Option<Arc<PolicySet>>,
    targets: BTreeMap<String, Covered>,
    blown: HashSet<String>,
    applied: HashSet<FileId>,
    applied_names: HashMap<ExecName, u32>,
    applied_dirs: HashMap<FileKey, u32>,
}

impl ExecKillTable {
    /// A table writing to `maps` (none in unit tests), counting in `metrics`.
    pub fn new(maps: Option<ExecKillMaps>, metrics: Option<Metrics>) -> Self {
        Self {
            maps,
            metrics,
            set: None,
            targets: BTreeMap::new(),
            blown: HashSet::new(),
            applied: HashSet::new(),
            applied_names: HashMap::new(),
            applied_dirs: HashMap::new(),
        }
    }

    /// Identities the kernel kills now.
    pub fn armed(&self) -> &HashSet<FileId> {
        &self.applied
    }

    /// Names (in directories) the kernel kills now.
    pub fn armed_names(&self) -> usize {
        self.applied_names.len()
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

    /// Makes the kernel maps the union of the armed policies' targets, by
    /// difference: an entry two policies share stays while either kills.
    fn sync(&mut self) {
        let armed = || {
            self.targets
                .iter()
                .filter(|(policy, _)| !self.blown.contains(*policy))
                .map(|(_, covered)| covered)
        };
        let wanted: HashSet<FileId> = armed().flat_map(|c| c.files.iter().copied()).collect();
        let mut names: HashMap<ExecName, u32> = HashMap::new();
        let mut dirs: HashMap<FileKey, u32> = HashMap::new();
        for rule in armed().flat_map(|c| c.names.iter()) {
            let Some((key, bits)) = name_entry(rule) else {
                continue;
            };
            *names.entry(key).or_default() |= bits;
            let longest = dirs.entry(key.dir).or_default();
            *longest = (*longest).max(key.len);
        }
        let (mut ids_map, mut names_map, mut dirs_map) = match self.maps.as_mut() {
            Some(m) => (Some(&mut m.ids), Some(&mut m.names), Some(&mut m.dirs)),
            None => (None, None, None),
        };
        let mut failed = 0;
        // Directories go in first and out last, names the other way round,
        // so a name is never looked for in a directory the kernel skips.
        apply_diff(
            &mut dirs_map,
            &mut self.applied_dirs,
            &dirs,
            true,
            &mut failed,
        );
        apply_diff(
            &mut names_map,
            &mut self.applied_names,
            &names,
            true,
            &mut failed,
        );
        let wanted_bits: HashMap<FileKey, u32> =
            wanted.iter().map(|id| (key(id), exec_kill::KILL)).collect();
        let mut applied_bits: HashMap<FileKey, u32> = self
            .applied
            .iter()
            .map(|id| (key(id), exec_kill::KILL))
            .collect();
        apply_diff(
            &mut ids_map,
            &mut applied_bits,
            &wanted_bits,
            true,
            &mut failed,
        );
        apply_diff(
            &mut ids_map,
            &mut applied_bits,
            &wanted_bits,
            false,
            &mut failed,
        );
        apply_diff(
            &mut names_map,
            &mut self.applied_names,
            &names,
            false,
            &mut failed,
        );
        apply_diff(
            &mut dirs_map,
            &mut self.applied_dirs,
            &dirs,
            false,
            &mut failed,
        );
        self.applied = applied_bits
            .keys()
            .map(|k| FileId {
                dev: k.dev,
                ino: k.ino,
            })
            .collect();
        if let Some(metrics) = &self.metrics {
            metrics.exec_kill_errors.inc_by(failed);
            metrics.exec_kill_entries.set(self.applied.len() as i64);
        }
    }
}

fn key(id: &FileId) -> FileKey {
    FileKey {
        dev: id.dev,
        _pad: 0,
        ino: id.ino,
    }
}

/// The `EXEC_KILL_NAMES` entry of `rule`; none for a name the kernel does
/// not look that far into.
fn name_entry(rule: &NameRule) -> Option<(ExecName, u32)> {
    if rule.name.is_empty() || rule.name.len() > EXEC_NAME_MAX {
        return None;
    }
    let hash = rule
        .name
        .iter()
        .fold(NAME_HASH_START, |h, &b| name_hash_step(h, b));
    let bits = if rule.prefix {
        exec_kill::PREFIX
    } else {
        exec_kill::EXACT
    };
    Some((
        ExecName {
            dir: key(&rule.dir),
            len: rule.name.len() as u32,
            _pad: 0,
            hash,
        },
        bits,
    ))
}

/// One half of bringing a kernel map from `applied` to `wanted`: the
/// inserts and changes (`add`) or the removals. An entry that could not be
/// inserted is left out of `applied` and counted in `failed`: those execs
/// are killed from user space, later.
fn apply_diff<K, V>(
    map: &mut Option<&mut aya::maps::HashMap<aya::maps::MapData, K, V>>,
    applied: &mut HashMap<K, V>,
    wanted: &HashMap<K, V>,
    add: bool,
    failed: &mut u64,
) where
    K: aya::Pod + Eq + std::hash::Hash + std::fmt::Debug,
    V: aya::Pod + Eq,
{
    if add {
        for (k, v) in wanted {
            if applied.get(k) == Some(v) {
                continue;
            }
            let result = match map.as_mut() {
                Some(map) => map.insert(k, v, 0),
                None => Ok(()),
            };
            match result {
                Ok(()) => {
                    applied.insert(*k, *v);
                }
                Err(err) => {
                    *failed += 1;
                    tracing::error!(%err, key = ?k, "arming an in-kernel exec kill");
                }
            }
        }
    } else {
        let stale: Vec<K> = applied
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for k in stale {
            if let Some(map) = map.as_mut()
                && let Err(err) = map.remove(&k)
            {
                tracing::debug!(%err, key = ?k, "removing an exec kill entry");
            }
            applied.remove(&k);
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
                .map(|(p, inos)| {
                    let covered = Covered {
                        files: inos.iter().map(|&i| id(i)).collect(),
                        names: [NameRule {
                            dir: id(100),
                            name: format!("{p}-tool").into_bytes(),
                            prefix: true,
                        }]
                        .into(),
                    };
                    (p.to_string(), covered)
                })
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
        assert_eq!(table.armed_names(), 1, "b's names went with it");

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

    #[test]
    fn names_hash_as_the_probe_does() {
        let rule = NameRule {
            dir: id(7),
            name: b"nc".to_vec(),
            prefix: true,
        };
        let (key, bits) = name_entry(&rule).unwrap();
        assert_eq!(bits, exec_kill::PREFIX);
        assert_eq!(key.len, 2);
        assert_eq!(key.hash, reflex_wire::file::name_hash(b"nc"));
        let long = NameRule {
            name: vec![b'x'; EXEC_NAME_MAX + 1],
            ..rule
        };
        assert!(name_entry(&long).is_none(), "too long for the probe");
    }
}
