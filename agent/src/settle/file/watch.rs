//! The watch list: which files and directories the file policies cover,
//! mirrored into the kernel's `WATCHED*` maps and into fanotify marks, and
//! the reverse lookups the agent needs to turn a kernel event back into a
//! path.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
};

use globset::GlobSet;
use reflex_wire::{
    FileKey,
    file::{name_hash, watch},
};

use crate::{
    fanotify::FileMarks,
    fsio::{self, FileState},
    loader::WatchMaps,
    policy::{
        Action, Mode, PolicySet,
        model::Trigger,
        value::{PathGlob, glob_set},
    },
    telemetry::watch::WatchMetrics,
};

pub mod capacity;
mod growth;
mod kernel;
mod marks;

pub use growth::Work;
use kernel::Kernel;

/// One watched path.
#[derive(Clone, Debug, Default)]
pub struct WatchedFile {
    /// Its state when last seen; `None` when it did not exist.
    pub last: Option<FileState>,
    /// Whether an enforcing policy with `kill` covers it.
    pub kill: bool,
}

/// Paths, identities and names the file sensor watches.
#[derive(Default)]
pub struct WatchList {
    files: BTreeMap<String, WatchedFile>,
    by_key: HashMap<FileKey, Vec<String>>,
    dirs: HashMap<FileKey, String>,
    /// Every directory globs and literal paths put files in, existing or not.
    dir_paths: std::collections::BTreeSet<String>,
    names: HashMap<u64, Vec<String>>,
    patterns: Option<GlobSet>,
    kill_patterns: Option<GlobSet>,
    kernel: Option<Kernel>,
    marks: Option<FileMarks>,
    /// Paths watched whether or not a file is there: named by a policy, or
    /// kept by a baseline. Other paths (a glob's files) are forgotten once
    /// their file is gone.
    kept: HashSet<String>,
    /// What keeping the list up to date has cost.
    work: Work,
    /// Marked files, with the path they were marked by.
    applied_marks: HashMap<FileKey, String>,
    /// Directories on the way to watched files, marked to hear when one is
    /// renamed or removed, with their paths.
    marked_dirs: HashMap<FileKey, String>,
    /// Marked directories also told of entries created in them, because a
    /// watched path under them has lost its own directory.
    entry_dirs: HashSet<FileKey>,
    /// Files that could not be marked, not tried again until the policies
    /// are reloaded (said once each).
    unmarkable: HashSet<FileKey>,
    /// Enforcing `kill` policies and their paths.
    kill_policies: Vec<(String, Vec<PathGlob>)>,
    /// Covered files and directories one look or walk takes in at once
    /// (`watch.max_scan`; 0 for the default).
    max_scan: u32,
    /// Directories whose last look stopped at `max_scan` covered files, to
    /// be looked through again.
    unfinished: HashSet<FileKey>,
    /// Where scans that were cut are counted.
    metrics: Option<WatchMetrics>,
}

impl WatchList {
    /// A list mirrored into `kernel` (none in tests and replay).
    pub fn new(kernel: Option<WatchMaps>) -> Self {
        Self {
            kernel: kernel.map(Kernel::new),
            ..Self::default()
        }
    }

    /// Shows the kernel maps' use and capacity in `metrics`.
    pub fn with_metrics(&mut self, metrics: WatchMetrics) {
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.with_metrics(metrics.clone());
        }
        self.metrics = Some(metrics);
    }

    /// Takes in at most `max` covered files per look or walk (`watch.max_scan`).
    pub fn set_max_scan(&mut self, max: u32) {
        self.max_scan = max;
    }

    /// Covered files one look or walk takes in at once.
    pub(crate) fn max_scan(&self) -> usize {
        match self.max_scan {
            0 => capacity::DEFAULT_MAX_SCAN as usize,
            max => max as usize,
        }
    }

    /// Counts a scan stopped at its budget at `stage` (`start`, `growth`).
    fn scan_cut(&self, stage: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.scans_cut.with_label_values(&[stage]).inc();
        }
    }

    /// Mirrors the list into fanotify marks on the watched files too.
    pub fn mark_with(&mut self, marks: FileMarks) {
        self.marks = Some(marks);
        self.sync_marks();
    }

    /// Recomputes everything from the `file` policies in `set`.
    pub fn configure(&mut self, set: &PolicySet) {
        let mut globs = Vec::new();
        let mut kill_globs = Vec::new();
        let mut kill_policies = Vec::new();
        for policy in set.policies() {
            let Trigger::File { paths, .. } = &policy.trigger else {
                continue;
            };
            let kills = policy.mode == Mode::Enforce
                && policy
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Kill { .. }));
            for path in paths {
                globs.push(path.clone());
                if kills {
                    kill_globs.push(path.clone());
                }
            }
            if kills {
                kill_policies.push((policy.name.clone(), paths.clone()));
            }
        }
        self.kill_policies = kill_policies;
        self.patterns = glob_set(globs.iter().map(PathGlob::glob));
        self.kill_patterns = glob_set(kill_globs.iter().map(PathGlob::glob));
        self.files.clear();
        self.dirs.clear();
        self.dir_paths.clear();
        self.kept.clear();
        self.unmarkable.clear();
        for glob in &globs {
            self.expand(glob);
        }
        self.reindex();
        self.sync_kernel();
        self.sync_marks();
    }

    /// The kill fuse of `policy` blew: the kernel stops killing at the open
    /// of the files only it covers for kill (until the next configure).
    pub fn kills_off(&mut self, policy: &str) {
        let before = self.kill_policies.len();
        self.kill_policies.retain(|(name, _)| name != policy);
        if self.kill_policies.len() == before {
            return;
        }
        self.kill_patterns = glob_set(
            self.kill_policies
                .iter()
                .flat_map(|(_, paths)| paths.iter().map(PathGlob::glob)),
        );
        let kills = self.kill_patterns.clone();
        for (path, entry) in &mut self.files {
            entry.kill = kills.as_ref().is_some_and(|k| k.is_match(path));
        }
        self.sync_kernel();
    }

    /// Whether the file at `path` carries a fanotify mark.
    pub fn is_marked(&self, path: &str) -> bool {
        self.files
            .get(path)
            .and_then(|w| w.last.as_ref())
            .is_some_and(|s| self.applied_marks.contains_key(&s.key))
    }

    /// Whether any file policy's paths match `path`.
    pub fn covers(&self, path: &str) -> bool {
        self.patterns.as_ref().is_some_and(|p| p.is_match(path))
    }

    /// Every watched path.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The entry of `path`.
    pub fn get(&self, path: &str) -> Option<&WatchedFile> {
        self.files.get(path)
    }

    /// Watched paths of the file with identity `key`.
    pub fn paths_of(&self, key: &FileKey) -> &[String] {
        self.by_key.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    /// Path of the watched directory with identity `key`.
    pub fn dir_path(&self, key: &FileKey) -> Option<&str> {
        self.dirs.get(key).map(String::as_str)
    }

    /// Watched paths whose last component is the last component of `arg`.
    pub fn paths_named_like(&self, arg: &str) -> &[String] {
        self.names
            .get(&name_hash(arg.as_bytes()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Watches `paths` too, whether or not a file is there now: paths a
    /// policy keeps baselines of, so one deleted while no agent ran is
    /// found missing and restored.
    pub fn include(&mut self, paths: impl IntoIterator<Item = String>) {
        let mut added = false;
        for path in paths {
            if !self.kept.insert(path.clone()) || self.files.contains_key(&path) {
                continue;
            }
            let kill = self
                .kill_patterns
                .as_ref()
                .is_some_and(|k| k.is_match(&path));
            let last = fsio::state(Path::new(&path)).ok().flatten();
            if let Some(parent) = Path::new(&path).parent() {
                self.add_dir(parent);
            }
            self.files.insert(path, WatchedFile { last, kill });
            added = true;
        }
        if added {
            self.reindex();
            self.sync_kernel();
            self.sync_marks();
        }
    }

    /// Puts `key`, the file about to be renamed over `path` by a restore,
    /// into the kernel's watch list at once, so no write to it goes unseen
    /// before [`WatchList::refresh`] follows it.
    pub fn expect(&mut self, path: &str, key: FileKey, temp: &Path) {
        if !self.files.contains_key(path) {
            return;
        }
        self.mark_ahead(path, key, temp);
        let (Some(entry), Some(kernel)) = (self.files.get(path), self.kernel.as_mut()) else {
            return;
        };
        let bits = watch::REPORT | if entry.kill { watch::KILL } else { 0 };
        kernel.set_file(key, bits, path);
        // The file the rename replaces is freed by it, and its inode number
        // may go to the next file anyone creates: out of the kernel's list
        // now, or that stranger's open would be reported, or killed, as
        // this file's.
        if let Some(old) = entry.last.as_ref().map(|s| s.key)
            && old != key
            && self.by_key.get(&old).is_none_or(|p| p.len() <= 1)
        {
            kernel.drop_file(&old);
        }
        // Its events name the path until `refresh` indexes it for good.
        let paths = self.by_key.entry(key).or_default();
        if !paths.iter().any(|p| p == path) {
            paths.push(path.to_string());
        }
    }

    /// Adds `glob`'s existing files and the directories they (and files
    /// created later) live in.
    fn expand(&mut self, glob: &PathGlob) {
        let kill = self
            .kill_patterns
            .as_ref()
            .is_some_and(|k| k.is_match(glob.as_str()));
        if glob.is_literal() {
            let path = glob.as_str().to_string();
            self.kept.insert(path.clone());
            if let Some(parent) = Path::new(&path).parent() {
                self.add_dir(parent);
            }
            let last = fsio::state(Path::new(&path)).ok().flatten();
            self.files.insert(path, WatchedFile { last, kill });
            return;
        }
        let base = glob.literal_dir();
        let matcher = glob.matcher();
        let depth = glob.walk_depth();
        let max = self.max_scan();
        // Only what is kept counts: names the glob does not match cost a
        // directory entry read, no stat, so a directory full of decoys
        // cannot hide the covered files behind them.
        let mut kept = 0;
        for entry in walkdir::WalkDir::new(base)
            .max_depth(depth)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
        {
            let path = entry.path();
            let is_dir = entry.file_type().is_dir();
            let is_covered = !is_dir
                && entry.file_type().is_file()
                && matcher.is_match(path)
                && !entry.file_name().to_str().is_some_and(fsio::is_own_temp);
            if !is_dir && !is_covered {
                continue;
            }
            kept += 1;
            if kept > max {
                tracing::warn!(
                    glob = glob.as_str(),
                    limit = max,
                    "glob expands to too many files; watching the first ones (watch.max_scan)"
                );
                self.scan_cut("start");
                break;
            }
            if is_dir {
                self.add_dir(path);
            } else {
                let path = path.display().to_string();
                let kill = kill
                    || self
                        .kill_patterns
                        .as_ref()
                        .is_some_and(|k| k.is_match(&path));
                let last = fsio::state(Path::new(&path)).ok().flatten();
                self.files.insert(path, WatchedFile { last, kill });
            }
        }
    }

    /// Watches the directory `dir` (a stat); returns whether its identity
    /// is new to the list.
    fn add_dir(&mut self, dir: &Path) -> bool {
        self.work.entries += 1;
        self.dir_paths.insert(dir.display().to_string());
        if let Ok(meta) = std::fs::metadata(dir) {
            use std::os::unix::fs::MetadataExt as _;
            let key = FileKey {
                dev: fsio::encode_dev(meta.dev()),
                _pad: 0,
                ino: meta.ino(),
            };
            return self.dirs.insert(key, dir.display().to_string()).is_none();
        }
        false
    }

    fn reindex(&mut self) {
        self.work.full_passes += 1;
        self.work.entries += self.files.len() as u64;
        self.by_key.clear();
        self.names.clear();
        for (path, entry) in &self.files {
            if let Some(state) = &entry.last {
                self.by_key.entry(state.key).or_default().push(path.clone());
            }
            self.names
                .entry(name_hash(path.as_bytes()))
                .or_default()
                .push(path.clone());
        }
    }

    /// Makes the kernel maps equal to the list, by difference.
    fn sync_kernel(&mut self) {
        let Some(kernel) = self.kernel.as_mut() else {
            return;
        };
        self.work.entries += self.files.len() as u64;
        let mut files: HashMap<FileKey, u32> = HashMap::new();
        for entry in self.files.values() {
            if let Some(state) = &entry.last {
                let bits = watch::REPORT | if entry.kill { watch::KILL } else { 0 };
                *files.entry(state.key).or_default() |= bits;
            }
        }
        kernel.sync(files, &self.dirs, &self.names);
    }
}
