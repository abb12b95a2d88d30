//! The watch list growing and shrinking with the files globs cover: a file
//! taken in, followed to a new inode, or forgotten once gone costs the
//! entries it touches, never a pass over the whole list; a directory's
//! entries are looked through once per notice the settler passes on
//! (which batches them), and a notice about a directory looks at that
//! directory and what is new in it, never at every watched directory.
use std::{
    collections::{HashMap, HashSet},
    ops::Bound,
    path::Path,
};

use reflex_wire::{
    FileKey,
    file::{name_hash, watch},
};

use super::{WatchList, WatchedFile};
use crate::{fanotify::Marked, fsio};

/// What keeping the list up to date has cost so far: the measure that
/// shows a burst of new files costs in proportion to the files, not to
/// their square.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Passes over the whole list (reindex, kernel and mark syncs).
    pub full_passes: u64,
    /// Entries looked at: files and directory entries, in passes or alone.
    pub entries: u64,
    /// Directories looked through for new entries.
    pub dir_scans: u64,
}

impl WatchList {
    /// What keeping the list up to date has cost so far.
    pub fn work(&self) -> Work {
        self.work
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
        let key = last.as_ref().map(|s| s.key);
        self.files
            .insert(path.to_string(), WatchedFile { last, kill });
        self.work.entries += 1;
        let hash = name_hash(path.as_bytes());
        let names = self.names.entry(hash).or_default();
        names.push(path.to_string());
        if names.len() == 1
            && let Some(kernel) = self.kernel.as_mut()
        {
            kernel.set_name(hash, path);
        }
        if let Some(key) = key {
            self.index_key(path, key, kill);
        }
        self.publish();
        true
    }

    /// Records the state `path` is in now (after a change or a restore),
    /// following a replaced inode.
    pub fn refresh(&mut self, path: &str) {
        self.refresh_to(path, fsio::state(Path::new(path)).ok().flatten());
    }

    /// [`WatchList::refresh`] with the state a look found (`now`), so that
    /// the settler itself never waits on the file's filesystem.
    pub fn refresh_to(&mut self, path: &str, now: Option<fsio::FileState>) {
        let Some(entry) = self.files.get_mut(path) else {
            return;
        };
        let old = entry.last.as_ref().map(|s| s.key);
        let new = now.as_ref().map(|s| s.key);
        let kill = entry.kill;
        entry.last = now;
        if old == new {
            return;
        }
        self.work.entries += 1;
        if new.is_none() && Path::new(path).parent().is_some_and(|d| !d.is_dir()) {
            // Its directory went: the marks on the way to it change too.
            self.reindex();
            self.sync_kernel();
            self.sync_marks();
            return;
        }
        if let Some(old) = old {
            self.unindex_key(path, old);
        }
        if let Some(new) = new {
            self.index_key(path, new, kill);
        }
        self.publish();
    }

    /// Forgets `path` when no file is there and nothing keeps it (a glob's
    /// file removed): list, name and kernel entries go, so a directory
    /// whose files come and go does not grow the list. Paths a policy
    /// names, or a baseline keeps, stay (to be restored). Returns whether
    /// it was forgotten.
    pub fn forget_if_gone(&mut self, path: &str) -> bool {
        let Some(entry) = self.files.get(path) else {
            return false;
        };
        if entry.last.is_some() || self.kept.contains(path) {
            return false;
        }
        self.files.remove(path);
        let hash = name_hash(path.as_bytes());
        if let Some(paths) = self.names.get_mut(&hash) {
            paths.retain(|p| p != path);
            if paths.is_empty() {
                self.names.remove(&hash);
                if let Some(kernel) = self.kernel.as_mut() {
                    kernel.drop_name(hash);
                }
            }
        }
        self.publish();
        true
    }

    /// Indexes `path` under `key`, in the kernel and in fanotify too.
    fn index_key(&mut self, path: &str, key: FileKey, kill: bool) {
        let paths = self.by_key.entry(key).or_default();
        if !paths.iter().any(|p| p == path) {
            paths.push(path.to_string());
        }
        if let Some(kernel) = self.kernel.as_mut() {
            let bits = watch::REPORT | if kill { watch::KILL } else { 0 };
            let bits = kernel.file_bits(&key).map_or(bits, |b| b | bits);
            kernel.set_file(key, bits, path);
        }
        self.mark_new(path, key);
    }

    /// `path` no longer names `key`: when no other watched path does, the
    /// kernel and fanotify stop watching it (its inode number may go to
    /// anyone's next file).
    fn unindex_key(&mut self, path: &str, key: FileKey) {
        let Some(paths) = self.by_key.get_mut(&key) else {
            return;
        };
        paths.retain(|p| p != path);
        if paths.is_empty() {
            self.by_key.remove(&key);
            self.unmarkable.remove(&key);
            if let Some(kernel) = self.kernel.as_mut() {
                kernel.drop_file(&key);
            }
            if let Some(marked) = self.applied_marks.remove(&key)
                && let Some(marks) = &self.marks
            {
                marks.unmark(&marked, Marked::File(key));
            }
            return;
        }
        // Another name of the file stays: its bits are that name's.
        let kill = paths
            .iter()
            .any(|p| self.files.get(p).is_some_and(|w| w.kill));
        let first = paths[0].clone();
        if let Some(kernel) = self.kernel.as_mut() {
            let bits = watch::REPORT | if kill { watch::KILL } else { 0 };
            kernel.set_file(key, bits, &first);
        }
    }

    /// Shows the kernel maps' use.
    pub(super) fn publish(&self) {
        if let Some(kernel) = &self.kernel {
            kernel.publish();
        }
    }

    /// The marked directory `key` changed: it was renamed, exchanged or
    /// removed, or an entry appeared in it. Returns the watched paths under
    /// it, whose files are to be looked at again, and the files policies
    /// cover that appeared in it without a creating `open` the probes saw
    /// (`mknod`, io_uring, a rename or link into it), now watched. The
    /// directories globs watch are looked up again.
    /// With `entry` (an entry appeared, the directory itself stayed), only
    /// paths that have no file or have lost their directory are looked at
    /// again, and the whole list is synced only when a directory changed
    /// or a path lost its own: a busy directory must cost neither a hash of
    /// every watched file in it nor a pass over the list per new entry.
    pub fn dir_changed(&mut self, key: &FileKey, entry: bool) -> (Vec<String>, Vec<String>) {
        let Some(dir) = self.marked_dirs.get(key).cloned() else {
            return (Vec::new(), Vec::new());
        };
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut parents: HashMap<&str, bool> = HashMap::new();
        let mut paths = Vec::new();
        let mut lost_any = false;
        let under = self
            .files
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(&prefix));
        for (p, w) in under {
            self.work.entries += 1;
            let mut lost_dir = || {
                let parent = p.rfind('/').map_or("", |end| &p[..end]);
                *parents
                    .entry(parent)
                    .or_insert_with(|| !Path::new(parent).is_dir())
            };
            let lost = entry && lost_dir();
            lost_any |= lost;
            if !entry || w.last.is_none() || lost {
                paths.push(p.clone());
            }
        }
        let mut appeared = Vec::new();
        let mut new_dirs = false;
        if self.dirs.get(key) == Some(&dir) {
            new_dirs = self.scan(key, &dir, &prefix, &mut appeared);
        }
        if !entry || lost_any {
            // A directory moved, or a path lost its own: any watched
            // directory may be elsewhere now, so all are looked up again.
            let before: HashSet<FileKey> = self.dirs.keys().copied().collect();
            self.dirs.clear();
            for dir in std::mem::take(&mut self.dir_paths) {
                self.add_dir(Path::new(&dir));
            }
            new_dirs |=
                self.dirs.len() != before.len() || self.dirs.keys().any(|k| !before.contains(k));
        }
        if !entry || new_dirs || lost_any {
            self.work.full_passes += 1;
            self.sync_kernel();
            self.sync_marks();
        }
        (paths, appeared)
    }
}

impl WatchList {
    /// Looks through the entries of the watched directory `dir` (`key`):
    /// its files policies cover and that are not watched yet are taken in
    /// (and put in `appeared` when no file was watched there), at most
    /// `max_scan` of them, the rest left for the next look (the directory
    /// is then [`WatchList::unfinished`]); names no glob covers cost the
    /// entry read only. A directory the list names that (re)appeared in it
    /// is watched; returns whether one did.
    fn scan(&mut self, key: &FileKey, dir: &str, prefix: &str, appeared: &mut Vec<String>) -> bool {
        self.unfinished.remove(key);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        self.work.dir_scans += 1;
        let max = self.max_scan();
        let mut taken = 0;
        let mut new_dirs = false;
        for entry in entries.flatten() {
            self.work.entries += 1;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = format!("{prefix}{name}");
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if self.dir_paths.contains(&path) {
                    new_dirs |= self.add_dir(Path::new(&path));
                }
                continue;
            }
            if !kind.is_file()
                || self.files.contains_key(&path)
                || !self.covers(&path)
                || fsio::is_own_temp(&name)
            {
                continue;
            }
            if taken == max {
                self.unfinished.insert(*key);
                self.scan_cut("growth");
                break;
            }
            taken += 1;
            if self.add(&path) {
                appeared.push(path);
            }
        }
        new_dirs
    }

    /// Whether the last look through the directory `key` stopped at
    /// `watch.max_scan` covered files, so it is to be looked through again.
    pub fn unfinished(&self, key: &FileKey) -> bool {
        self.unfinished.contains(key)
    }
}

#[cfg(test)]
impl WatchList {
    /// Takes every watched directory as marked, as fanotify would have it,
    /// so that tests without fanotify can hand in its directory notices.
    pub(crate) fn pretend_marked(&mut self) {
        for (key, path) in &self.dirs {
            self.marked_dirs.insert(*key, path.clone());
        }
    }
}
