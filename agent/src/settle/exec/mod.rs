//! The settler's exec half: the files the exec policies name, by identity
//! (device and inode), so that an exec is matched by the file the kernel
//! loaded, not by the name it was started with.
//!
//! Every exec policy's paths are expanded over the files that exist (a
//! literal path, or a glob's matches, followed through symlinks to the file
//! they name). The directories they live in are watched (inotify), so a
//! file that appears or is replaced is taken in as it lands; a file first
//! met in an exec is taken in then. Each exec record gets its `aliases`
//! (policy paths that are the same file: a hardlink, a bind mount) and its
//! `script` (the file `execve` named when an interpreter runs it), and the
//! exec kill table hears which files, and which names in which directories,
//! each kernel-enforced policy covers.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use globset::GlobSet;
use notify::{EventKind, RecursiveMode, Watcher as _, event::ModifyKind};
use tokio::sync::mpsc;

use crate::{
    events::{Body, FileId, Record},
    exec_kills::{Covered, NameRule, Notice, NoticeSender, kernel_enforced},
    fsio,
    loader::exec_kill::DEFAULT_ENTRIES,
    policy::{
        PolicySet,
        model::Trigger,
        value::{PathGlob, glob_set},
    },
};

/// Paths of watched directories waiting for the settler; past this the
/// watch says "overflowed" and the settler expands the globs again.
const CHANGES_MAX: usize = 4096;

/// Least time between two notices of targets to the kill table while
/// files keep appearing (more when a notice costs more: see `flush`).
const PUBLISH_GAP: Duration = Duration::from_millis(100);

/// Most directory entries one glob may expand to before the walk stops.
const MAX_WALK: usize = 100_000;
/// Most directories watched for files that appear.
const MAX_DIRS: usize = 4096;

/// Files the exec policies name, and who hears about them.
pub struct ExecWatch {
    set: Arc<PolicySet>,
    /// Every exec policy's paths.
    patterns: Option<GlobSet>,
    /// Kernel-enforced policies by name, with their paths and the names
    /// they cover in directories that exist.
    kernel: Vec<(String, GlobSet, HashSet<NameRule>)>,
    /// Path (as the policy's pattern matched it) → identity of the file.
    files: BTreeMap<String, FileId>,
    by_id: HashMap<FileId, BTreeSet<String>>,
    watcher: Option<notify::RecommendedWatcher>,
    changes_tx: mpsc::Sender<PathBuf>,
    changes_rx: Option<mpsc::Receiver<PathBuf>>,
    /// Set by the watch when a change found the queue full.
    overflowed: Arc<AtomicBool>,
    kills: Option<NoticeSender>,
    sent: Option<BTreeMap<String, Covered>>,
    /// Files changed since the kill table was last told.
    dirty: bool,
    /// When the kill table may be told next.
    next_publish: Instant,
    overflows: Option<prometheus::IntCounter>,
}

impl Default for ExecWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ExecWatch {
    /// An empty watch; [`ExecWatch::configure`] fills it.
    pub fn new() -> Self {
        let (changes_tx, changes_rx) = mpsc::channel(CHANGES_MAX);
        Self {
            set: Arc::new(PolicySet::default()),
            patterns: None,
            kernel: Vec::new(),
            files: BTreeMap::new(),
            by_id: HashMap::new(),
            watcher: None,
            changes_tx,
            changes_rx: Some(changes_rx),
            overflowed: Arc::new(AtomicBool::new(false)),
            kills: None,
            sent: None,
            dirty: false,
            next_publish: Instant::now(),
            overflows: None,
        }
    }

    /// Tells `kills` the files each kernel-enforced policy covers, now and
    /// whenever that changes.
    pub fn tell(&mut self, kills: NoticeSender) {
        self.kills = Some(kills);
        self.sent = None;
        self.publish();
    }

    /// Counts overflows of the directory watch in `overflows`.
    pub fn count_overflows(&mut self, overflows: prometheus::IntCounter) {
        self.overflows = Some(overflows);
    }

    /// Paths in watched directories that changed; taken once, by the task
    /// that runs the settler.
    pub fn take_changes(&mut self) -> Option<mpsc::Receiver<PathBuf>> {
        self.changes_rx.take()
    }

    /// Expands the exec policies of `set` and watches their directories.
    pub fn configure(&mut self, set: Arc<PolicySet>) {
        let globs: Vec<&PathGlob> = exec_paths(&set).collect();
        self.patterns = glob_set(globs.iter().map(|g| g.glob()));
        self.kernel = set
            .policies()
            .iter()
            .filter(|p| kernel_enforced(p))
            .filter_map(|p| match &p.trigger {
                Trigger::Exec { paths } => {
                    let names = paths.iter().filter_map(name_rule).collect();
                    glob_set(paths.iter().map(PathGlob::glob)).map(|g| (p.name.clone(), g, names))
                }
                _ => None,
            })
            .collect();
        drop(globs);
        self.set = set;
        let dirs = self.expand_all();
        self.watch(dirs);
        // A new set is always told, even with the same files: it re-arms
        // the fuses of the table.
        self.sent = None;
        self.publish();
    }

    /// Expands every exec policy's paths over the files that exist;
    /// returns the directories they live in.
    fn expand_all(&mut self) -> BTreeSet<String> {
        self.files.clear();
        self.by_id.clear();
        let mut dirs = BTreeSet::new();
        for glob in exec_paths(&self.set) {
            expand(glob, &mut self.files, &mut dirs);
        }
        for (path, id) in &self.files {
            self.by_id.entry(*id).or_default().insert(path.clone());
        }
        dirs
    }

    /// Takes in a path of a watched directory that changed (created,
    /// renamed in or out, removed, chmod); the kill table hears of it at
    /// the next [`ExecWatch::flush`].
    pub fn changed(&mut self, path: &Path) {
        if self.refresh(&path.to_string_lossy()) {
            self.dirty = true;
        }
    }

    /// Tells the kill table what changed, at most once per gap: a burst of
    /// files appearing (an attacker's thousands) costs one complete notice
    /// per gap, not one per file. The gap grows with what a notice costs,
    /// so telling takes at most a tenth of the settler's time. A watch
    /// that overflowed is made good by expanding the globs again.
    pub fn flush(&mut self, now: Instant) {
        if self.overflowed.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "exec policy directories changed faster than they were read; expanding their paths again"
            );
            if let Some(overflows) = &self.overflows {
                overflows.inc();
            }
            self.expand_all();
            self.dirty = true;
        }
        if !self.dirty || now < self.next_publish {
            return;
        }
        let started = Instant::now();
        self.publish();
        self.next_publish = now + PUBLISH_GAP.max(started.elapsed() * 10);
    }

    /// When [`ExecWatch::flush`] has something to tell.
    pub fn flush_at(&self) -> Option<Instant> {
        (self.dirty || self.overflowed.load(Ordering::Relaxed)).then_some(self.next_publish)
    }

    /// Fills an exec record's `aliases` and `script`, and takes in a file
    /// the policies name that this exec shows is new.
    pub fn finish(&mut self, record: &mut Record) {
        let Body::Exec(exec) = &mut record.body else {
            return;
        };
        let id = exec.identity();
        let exe = record.process.exe.clone();
        if let (Some(exe), Some(id)) = (&exe, id)
            && self.files.get(exe) != Some(&id)
            && self.refresh(exe)
        {
            self.dirty = true;
        }
        exec.script = script_of(record.process.pid, &exec.filename, exe.as_deref(), id);
        let script_id = exec.script.as_deref().and_then(|s| {
            if self.refresh(s) {
                self.dirty = true;
            }
            identity(Path::new(s))
        });
        let mut aliases = BTreeSet::new();
        for id in id.into_iter().chain(script_id) {
            aliases.extend(self.by_id.get(&id).into_iter().flatten().cloned());
        }
        exec.script_id = script_id;
        // A path a policy names, but not a file it names: what runs there is
        // someone's own file in their own mount namespace.
        let named = |i: &FileId| self.by_id.contains_key(i);
        let spelled_covered = [exe.as_deref(), exec.script.as_deref()]
            .into_iter()
            .flatten()
            .any(|p| self.patterns.as_ref().is_some_and(|g| g.is_match(p)));
        exec.foreign =
            spelled_covered && id.is_some() && !id.iter().chain(script_id.iter()).any(named);
        aliases.retain(|a| Some(a) != exe.as_ref() && Some(a) != exec.script.as_ref());
        exec.aliases = aliases.into_iter().collect();
    }

    /// Paths the exec policies name that exist, with their identities.
    pub fn files(&self) -> &BTreeMap<String, FileId> {
        &self.files
    }

    /// Re-reads `path` if a policy names it; whether its identity changed.
    fn refresh(&mut self, path: &str) -> bool {
        if !self.patterns.as_ref().is_some_and(|p| p.is_match(path)) {
            return false;
        }
        let now = identity(Path::new(path));
        let before = self.files.get(path).copied();
        if now == before {
            return false;
        }
        if let Some(old) = before
            && let Some(paths) = self.by_id.get_mut(&old)
        {
            paths.remove(path);
            if paths.is_empty() {
                self.by_id.remove(&old);
            }
        }
        match now {
            Some(id) => {
                self.files.insert(path.to_string(), id);
                self.by_id.entry(id).or_default().insert(path.to_string());
            }
            None => {
                self.files.remove(path);
            }
        }
        tracing::debug!(path, ?now, "exec policy file changed");
        true
    }

    /// Sends the kill table the files of each kernel-enforced policy, if
    /// they differ from what it was last told.
    fn publish(&mut self) {
        // Nothing is owed once looked at, told or not (no kill table:
        // `reflex events`, tests).
        self.dirty = false;
        let Some(kills) = &self.kills else { return };
        let policies: BTreeMap<String, Covered> = self
            .kernel
            .iter()
            .map(|(name, paths, names)| {
                let files = self
                    .files
                    .iter()
                    .filter(|(path, _)| paths.is_match(path))
                    .map(|(_, id)| *id)
                    .collect();
                let covered = Covered {
                    files,
                    names: names.clone(),
                };
                (name.clone(), covered)
            })
            .collect();
        if self.sent.as_ref() == Some(&policies) {
            return;
        }
        // Fails only when the table has stopped (shutdown).
        let _ = kills.send(Notice::Targets {
            set: self.set.clone(),
            policies: policies.clone(),
        });
        self.sent = Some(policies);
    }

    /// Replaces the directory watches by `dirs`.
    fn watch(&mut self, dirs: BTreeSet<String>) {
        self.watcher = None;
        if dirs.is_empty() {
            return;
        }
        let tx = self.changes_tx.clone();
        let overflowed = self.overflowed.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Reads and content writes leave a file's identity as it was.
            if event.kind.is_access()
                || matches!(event.kind, EventKind::Modify(ModifyKind::Data(_)))
            {
                return;
            }
            for path in event.paths {
                if tx.try_send(path).is_err() {
                    overflowed.store(true, Ordering::Relaxed);
                }
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(%err, "cannot watch the directories of exec policies; new files are taken in when they run");
                return;
            }
        };
        if dirs.len() > MAX_DIRS {
            tracing::warn!(
                dirs = dirs.len(),
                limit = MAX_DIRS,
                "exec policies cover too many directories; watching the first ones"
            );
        }
        for dir in dirs.iter().take(MAX_DIRS) {
            if let Err(err) = watcher.watch(Path::new(dir), RecursiveMode::NonRecursive) {
                tracing::debug!(%err, dir, "cannot watch an exec policy directory");
            }
        }
        self.watcher = Some(watcher);
    }
}

/// Entries the `EXEC_KILL` map should have room for with `set` loaded:
/// twice what its exec policies name today, for files that appear.
pub fn kernel_room(set: &PolicySet) -> u32 {
    let mut files = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    for glob in exec_paths(set) {
        expand(glob, &mut files, &mut dirs);
    }
    (files.len().saturating_mul(2) as u32).max(DEFAULT_ENTRIES)
}

/// Every path or glob of the exec policies in `set`.
fn exec_paths(set: &PolicySet) -> impl Iterator<Item = &PathGlob> {
    set.policies().iter().flat_map(|p| match &p.trigger {
        Trigger::Exec { paths } => paths.as_slice(),
        _ => &[],
    })
}

/// Adds the files `glob` names to `files` and the directories a file it
/// names may appear in to `dirs`.
fn expand(glob: &PathGlob, files: &mut BTreeMap<String, FileId>, dirs: &mut BTreeSet<String>) {
    if glob.is_literal() {
        let path = glob.as_str();
        dirs.insert(glob.literal_dir().to_string());
        if let Some(id) = identity(Path::new(path)) {
            files.insert(path.to_string(), id);
        }
        return;
    }
    let base = glob.literal_dir();
    let matcher = glob.matcher();
    let depth = glob.walk_depth();
    for (seen, entry) in walkdir::WalkDir::new(base)
        .max_depth(depth)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .enumerate()
    {
        if seen >= MAX_WALK {
            tracing::warn!(
                glob = glob.as_str(),
                limit = MAX_WALK,
                "exec glob expands to too many files; the rest are matched when they run"
            );
            break;
        }
        let path = entry.path().to_string_lossy();
        if entry.file_type().is_dir() {
            if entry.depth() < depth {
                dirs.insert(path.into_owned());
            }
        } else if matcher.is_match(entry.path())
            && let Some(id) = identity(entry.path())
        {
            files.insert(path.into_owned(), id);
        }
    }
}

/// The name the kernel can match for `glob` in its directory, whatever the
/// file's identity: a literal path's last component, or the start of a
/// last component `start*` (nothing else varying). Other globs are matched
/// by the identities of their files only.
fn name_rule(glob: &PathGlob) -> Option<NameRule> {
    let (dir, last) = glob.as_str().rsplit_once('/')?;
    let dir = if dir.is_empty() { "/" } else { dir };
    let meta = ['*', '?', '[', '{', '\\'];
    if dir.contains(meta) {
        return None;
    }
    let (name, prefix) = match last.strip_suffix('*') {
        _ if glob.is_literal() => (last, false),
        Some(start) if !start.is_empty() && !start.contains(meta) => (start, true),
        _ => return None,
    };
    let meta = fs::metadata(dir).ok().filter(fs::Metadata::is_dir)?;
    Some(NameRule {
        dir: FileId {
            dev: fsio::encode_dev(meta.dev()),
            ino: meta.ino(),
        },
        name: name.as_bytes().to_vec(),
        prefix,
    })
}

/// Identity of the regular file `path` names, following symlinks.
fn identity(path: &Path) -> Option<FileId> {
    let meta = fs::metadata(path).ok()?;
    meta.is_file().then(|| FileId {
        dev: fsio::encode_dev(meta.dev()),
        ino: meta.ino(),
    })
}

/// The file `filename` names for process `pid`, resolved, when it is not
/// the executable the kernel loaded (`exe`, `id`): the script an
/// interpreter runs. Looked up through the process's own root and working
/// directory; a descriptor name (`/dev/fd/N`) is not followed, as it would
/// name the agent's own descriptor.
fn script_of(pid: u32, filename: &str, exe: Option<&str>, id: Option<FileId>) -> Option<String> {
    if Some(filename) == exe || filename.starts_with("/dev/fd/") || filename.starts_with("/proc/") {
        return None;
    }
    let through_process = match filename.strip_prefix('/') {
        Some(rest) => PathBuf::from(format!("/proc/{pid}/root")).join(rest),
        None => PathBuf::from(format!("/proc/{pid}/cwd")).join(filename),
    };
    let real = fs::canonicalize(through_process)
        .or_else(|_| match filename.starts_with('/') {
            // The process is gone: an absolute name still says which file.
            true => fs::canonicalize(filename),
            false => Err(std::io::ErrorKind::NotFound.into()),
        })
        .ok()?;
    let real_text = real.to_string_lossy().into_owned();
    if Some(real_text.as_str()) == exe || identity(&real).is_some_and(|i| Some(i) == id) {
        return None;
    }
    Some(real_text)
}

#[cfg(test)]
mod tests;
