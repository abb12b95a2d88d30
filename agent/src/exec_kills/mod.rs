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
    /// The name, or its start (names longer than `EXEC_NAME_MAX - 1` bytes
    /// are left to the identities).
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
    /// What each kernel map holds now.
    ids: HashMap<FileKey, u32>,
    names: HashMap<ExecName, u32>,
    dirs: HashMap<FileKey, u32>,
    /// Entries the last sync could not insert (counted once, not per sync).
    refused: u64,
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
            ids: HashMap::new(),
            names: HashMap::new(),
            dirs: HashMap::new(),
            refused: 0,
        }
    }

    /// Identities the kernel kills now.
    pub fn armed(&self) -> HashSet<FileId> {
        self.ids
            .keys()
            .map(|k| FileId {
                dev: k.dev,
                ino: k.ino,
            })
            .collect()
    }

    /// Names (in directories) the kernel kills now.
    pub fn armed_names(&self) -> usize {
        self.names.len()
    }

    /// Applies every notice already queued on `notices`, without waiting:
    /// the first targets are in the kernel before the agent says it runs.
    pub fn drain(&mut self, notices: &mut mpsc::UnboundedReceiver<Notice>) {
        while let Ok(notice) = notices.try_recv() {
            self.apply(notice);
        }
    }

    /// Applies notices until every sender is gone. What is queued is
    /// taken together: each `Targets` is complete, so of several in a row
    /// only the newest is applied (a burst of files costs one sync).
    pub async fn run(mut self, mut notices: mpsc::UnboundedReceiver<Notice>) {
        while let Some(first) = notices.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH
                && let Ok(more) = notices.try_recv()
            {
                batch.push(more);
            }
            for notice in newest_targets(batch) {
                self.apply(notice);
            }
        }
    }

    /// Takes one notice into account and brings the kernel maps up to date.
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

    /// Makes the kernel maps the union of what the armed policies cover, by
    /// difference: an entry two policies share stays while either kills.
    fn sync(&mut self) {
        let mut ids = HashMap::new();
        let mut names: HashMap<ExecName, u32> = HashMap::new();
        let mut dirs: HashMap<FileKey, u32> = HashMap::new();
        let armed = self
            .targets
            .iter()
            .filter(|(policy, _)| !self.blown.contains(*policy));
        for (_, covered) in armed {
            ids.extend(covered.files.iter().map(|id| (key(id), exec_kill::KILL)));
            for (name, bits) in covered.names.iter().filter_map(name_entry) {
                *names.entry(name).or_default() |= bits;
                let longest = dirs.entry(name.dir).or_default();
                *longest = (*longest).max(name.len);
            }
        }
        let (mut id_map, mut name_map, mut dir_map) = match self.maps.as_mut() {
            Some(m) => (Some(&mut m.ids), Some(&mut m.names), Some(&mut m.dirs)),
            None => (None, None, None),
        };
        // A directory is armed before its names and disarmed after them: a
        // name the probe would skip for want of its directory is a miss.
        let mut failed = arm(&mut dir_map, &mut self.dirs, &dirs);
        failed += arm(&mut name_map, &mut self.names, &names);
        failed += arm(&mut id_map, &mut self.ids, &ids);
        disarm(&mut id_map, &mut self.ids, &ids);
        disarm(&mut name_map, &mut self.names, &names);
        disarm(&mut dir_map, &mut self.dirs, &dirs);
        if failed > 0 && failed != self.refused {
            tracing::error!(
                refused = failed,
                "in-kernel exec kills could not all be armed (a map is full); those files are killed from user space, after they start"
            );
        }
        if let Some(metrics) = &self.metrics {
            metrics
                .exec_kill_errors
                .inc_by(failed.saturating_sub(self.refused));
            metrics.exec_kill_entries.set(self.ids.len() as i64);
        }
        self.refused = failed;
    }
}

/// Most notices taken together.
const MAX_BATCH: usize = 1024;

/// `batch` without each `Targets` that the next notice, another `Targets`,
/// replaces (a fuse notice keeps the targets before it in force).
fn newest_targets(batch: Vec<Notice>) -> impl Iterator<Item = Notice> {
    let mut batch = batch.into_iter().peekable();
    std::iter::from_fn(move || {
        loop {
            let notice = batch.next()?;
            let replaced = matches!(notice, Notice::Targets { .. })
                && matches!(batch.peek(), Some(Notice::Targets { .. }));
            if !replaced {
                return Some(notice);
            }
        }
    })
}

fn key(id: &FileId) -> FileKey {
    FileKey {
        dev: id.dev,
        _pad: 0,
        ino: id.ino,
    }
}

/// The `EXEC_KILL_NAMES` entry of `rule`; none for a name the kernel does
/// not read that far into (it reads `EXEC_NAME_MAX` bytes, NUL included).
fn name_entry(rule: &NameRule) -> Option<(ExecName, u32)> {
    if rule.name.is_empty() || rule.name.len() >= EXEC_NAME_MAX {
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
    let name = ExecName {
        dir: key(&rule.dir),
        len: rule.name.len() as u32,
        _pad: 0,
        hash,
    };
    Some((name, bits))
}

/// A kernel map the table writes; none in unit tests.
type KernelMap<'a, K, V> = Option<&'a mut aya::maps::HashMap<aya::maps::MapData, K, V>>;

/// Inserts what `wanted` has and `applied` lacks (or holds otherwise) into
/// `map`, recording it in `applied`; returns how many inserts failed (a
/// full map): those execs are killed from user space, later.
fn arm<K, V>(
    map: &mut KernelMap<'_, K, V>,
    applied: &mut HashMap<K, V>,
    wanted: &HashMap<K, V>,
) -> u64
where
    K: aya::Pod + Eq + std::hash::Hash + std::fmt::Debug,
    V: aya::Pod + Eq,
{
    let mut failed = 0;
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
                failed += 1;
                tracing::debug!(%err, key = ?k, "arming an in-kernel exec kill");
            }
        }
    }
    failed
}

/// Removes from `map` and `applied` what `wanted` no longer has.
fn disarm<K, V>(map: &mut KernelMap<'_, K, V>, applied: &mut HashMap<K, V>, wanted: &HashMap<K, V>)
where
    K: aya::Pod + Eq + std::hash::Hash + std::fmt::Debug,
    V: aya::Pod,
{
    applied.retain(|k, _| {
        if wanted.contains_key(k) {
            return true;
        }
        if let Some(map) = map.as_mut()
            && let Err(err) = map.remove(k)
        {
            tracing::debug!(%err, key = ?k, "removing an exec kill entry");
        }
        false
    });
}

#[cfg(test)]
mod tests;
