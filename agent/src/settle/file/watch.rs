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
};

mod marks;

/// Most files one glob may expand to before the walk stops (and says so).
const MAX_WALK: usize = 100_000;

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
    kernel: Option<WatchMaps>,
    marks: Option<FileMarks>,
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
    applied_files: HashMap<FileKey, u32>,
    applied_dirs: HashSet<FileKey>,
    applied_names: HashSet<u64>,
}

impl WatchList {
    /// A list mirrored into `kernel` (none in tests and replay).
    pub fn new(kernel: Option<WatchMaps>) -> Self {
        Self {
            kernel,
            ..Self::default()
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

    /// Starts watching `path` (a new file a glob covers), or follows the
    /// file that appeared at a watched path that had none; returns whether
    /// no file was there when last seen (so a creating open made it).
    pub fn add(&mut self, path: &str) -> bool {
        if let Some(entry) = self.files.get(path) {
            if entry.last.is_some() {
                return false;
            }
            self.refresh(path);
            return true;
        }
        let kill = self
            .kill_patterns
            .as_ref()
            .is_some_and(|k| k.is_match(path));
        let last = fsio::state(Path::new(path)).ok().flatten();
        // By piece, not by rebuilding: files created one by one under a
        // glob must not cost the agent the whole list each.
        let key = last.as_ref().map(|s| s.key);
        self.files
            .insert(path.to_string(), WatchedFile { last, kill });
        let hash = name_hash(path.as_bytes());
        let names = self.names.entry(hash).or_default();
        names.push(path.to_string());
        let new_name = names.len() == 1;
        let Some(key) = key else {
            return true;
        };
        self.by_key.entry(key).or_default().push(path.to_string());
        if let Some(maps) = self.kernel.as_mut() {
            let bits = watch::REPORT | if kill { watch::KILL } else { 0 };
            let bits = self.applied_files.get(&key).map_or(bits, |b| b | bits);
            match maps.files.insert(key, bits, 0) {
                Ok(()) => {
                    self.applied_files.insert(key, bits);
                }
                Err(err) => tracing::error!(%err, path, "updating the kernel watch list"),
            }
            if new_name && !self.applied_names.contains(&hash) {
                match maps.names.insert(hash, watch::REPORT, 0) {
                    Ok(()) => {
                        self.applied_names.insert(hash);
                    }
                    Err(err) => tracing::error!(%err, path, "updating the kernel watch list"),
                }
            }
        }
        self.mark_new(path, key);
        true
    }

    /// Watches `paths` too, whether or not a file is there now: paths a
    /// policy keeps baselines of, so one deleted while no agent ran is
    /// found missing and restored.
    pub fn include(&mut self, paths: impl IntoIterator<Item = String>) {
        let mut added = false;
        for path in paths {
            if self.files.contains_key(&path) {
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
        let (Some(entry), Some(maps)) = (self.files.get(path), self.kernel.as_mut()) else {
            return;
        };
        let bits = watch::REPORT | if entry.kill { watch::KILL } else { 0 };
        if let Err(err) = maps.files.insert(key, bits, 0) {
            tracing::error!(%err, path, "watching a restored file ahead of its rename");
        }
        // The file the rename replaces is freed by it, and its inode number
        // may go to the next file anyone creates: out of the kernel's list
        // now, or that stranger's open would be reported, or killed, as
        // this file's.
        if let Some(old) = entry.last.as_ref().map(|s| s.key)
            && old != key
            && self.by_key.get(&old).is_none_or(|p| p.len() <= 1)
            && maps.files.remove(&old).is_ok()
        {
            self.applied_files.remove(&old);
        }
        // Its events name the path until `refresh` indexes it for good.
        let paths = self.by_key.entry(key).or_default();
        if !paths.iter().any(|p| p == path) {
            paths.push(path.to_string());
        }
    }

    /// Records the state `path` is in now (after a change or a restore),
    /// following a replaced inode.
    pub fn refresh(&mut self, path: &str) {
        self.refresh_to(path, fsio::state(Path::new(path)).ok().flatten());
    }

    /// [`WatchList::refresh`] with the state a look found (`now`), so that
    /// the settler itself never waits on the file's filesystem.
    pub fn refresh_to(&mut self, path: &str, now: Option<FileState>) {
        if let Some(entry) = self.files.get_mut(path) {
            let (old, new) = (
                entry.last.as_ref().map(|s| s.key),
                now.as_ref().map(|s| s.key),
            );
            entry.last = now;
            if old == new {
                return;
            }
            self.reindex();
            self.sync_kernel();
            match (old, new) {
                // A file replaced by another (a revert, a deploy by
                // rename): its directories stay as they were, so only
                // the file's own mark follows; re-reading every
                // directory of every watched file would put each
                // filesystem under the list on this path.
                (Some(old), Some(new)) => self.remark(path, old, new),
                _ => self.sync_marks(),
            }
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
        let mut seen = 0;
        for entry in walkdir::WalkDir::new(base)
            .max_depth(depth)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
        {
            seen += 1;
            if seen > MAX_WALK {
                tracing::warn!(
                    glob = glob.as_str(),
                    limit = MAX_WALK,
                    "glob expands to too many files; watching the first ones"
                );
                break;
            }
            let path = entry.path();
            if entry.file_type().is_dir() {
                self.add_dir(path);
            } else if entry.file_type().is_file()
                && matcher.is_match(path)
                && !entry.file_name().to_str().is_some_and(fsio::is_own_temp)
            {
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

    fn add_dir(&mut self, dir: &Path) {
        self.dir_paths.insert(dir.display().to_string());
        if let Ok(meta) = std::fs::metadata(dir) {
            use std::os::unix::fs::MetadataExt as _;
            let key = FileKey {
                dev: fsio::encode_dev(meta.dev()),
                _pad: 0,
                ino: meta.ino(),
            };
            self.dirs.insert(key, dir.display().to_string());
        }
    }

    fn reindex(&mut self) {
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
        let Some(maps) = self.kernel.as_mut() else {
            return;
        };
        let mut files: HashMap<FileKey, u32> = HashMap::new();
        for (path, entry) in &self.files {
            if let Some(state) = &entry.last {
                let bits = watch::REPORT | if entry.kill { watch::KILL } else { 0 };
                *files.entry(state.key).or_default() |= bits;
            }
            let _ = path;
        }
        let names: HashSet<u64> = self.names.keys().copied().collect();
        let dirs: HashSet<FileKey> = self.dirs.keys().copied().collect();
        let report = |what: &str, err: aya::maps::MapError| {
            tracing::error!(%err, map = what, "updating the kernel watch list");
        };
        for key in self.applied_files.keys().filter(|k| !files.contains_key(k)) {
            let _ = maps.files.remove(key);
        }
        for (key, bits) in &files {
            if self.applied_files.get(key) != Some(bits)
                && let Err(e) = maps.files.insert(key, bits, 0)
            {
                report(reflex_wire::maps::WATCHED, e);
            }
        }
        for key in self.applied_dirs.difference(&dirs) {
            let _ = maps.dirs.remove(key);
        }
        for key in dirs.difference(&self.applied_dirs) {
            if let Err(e) = maps.dirs.insert(key, watch::REPORT, 0) {
                report(reflex_wire::maps::WATCHED_DIRS, e);
            }
        }
        for hash in self.applied_names.difference(&names) {
            let _ = maps.names.remove(hash);
        }
        for hash in names.difference(&self.applied_names) {
            if let Err(e) = maps.names.insert(hash, watch::REPORT, 0) {
                report(reflex_wire::maps::WATCHED_NAMES, e);
            }
        }
        self.applied_files = files;
        self.applied_dirs = dirs;
        self.applied_names = names;
    }
}
