//! The watch list growing and shrinking with the files globs cover: a file
//! taken in, followed to a new inode, or forgotten once gone costs the
//! entries it touches, never a pass over the whole list; a directory's
//! entries are looked through once per notice the settler passes on
//! (which batches them).
use std::path::Path;

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
        if self.files.get(path).is_some_and(|e| e.last.is_some()) {
            return false;
        }
        self.add_with(path, fsio::state(Path::new(path)).ok().flatten())
    }

    /// [`WatchList::add`] with the state a look at `path` found (`last`),
    /// so that the settler itself never waits on the file's filesystem.
    pub fn add_with(&mut self, path: &str, last: Option<fsio::FileState>) -> bool {
        if let Some(entry) = self.files.get(path) {
            if entry.last.is_some() {
                return false;
            }
            self.refresh_to(path, last);
            return true;
        }
        let kill = self
            .kill_patterns
            .as_ref()
            .is_some_and(|k| k.is_match(path));
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

    /// Starts watching `path`, created as the file `key` (its creating
    /// open said so), with nothing looked at on the settler: the kernel
    /// watches the identity at once, fanotify's mark waits for the file's
    /// first look ([`WatchList::refresh_to`]), which may hang with its
    /// filesystem where this may not. Whether no file was there before.
    pub fn add_created(&mut self, path: &str, key: FileKey) -> bool {
        if self.files.get(path).is_some_and(|e| e.last.is_some()) {
            // Followed by its looks from here, as [`WatchList::add`] does.
            return false;
        }
        let seen = fsio::FileState {
            key,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
        };
        let marks = self.marks.take();
        let added = self.add_with(path, Some(seen));
        self.marks = marks;
        if self.marks.is_some() && !self.applied_marks.contains_key(&key) {
            self.unmarked.insert(key);
        }
        added
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
            // A file first watched by the identity its creation showed
            // gets its fanotify mark once a look has answered for it.
            if let Some(key) = new
                && self.unmarked.remove(&key)
            {
                self.mark_new(path, key);
            }
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
