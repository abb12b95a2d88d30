//! The watch list's fanotify marks: the watched files themselves, and every
//! directory on the way to them, so that a directory renamed away,
//! exchanged or removed is noticed and the paths under it looked at again.
use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use reflex_wire::FileKey;

use super::WatchList;
use crate::{
    fanotify::{FanotifyError, Marked},
    fsio,
    logging::error_chain,
};

impl WatchList {
    /// Makes the fanotify marks equal to the watched files and the
    /// directories on the way to them, by difference.
    pub(super) fn sync_marks(&mut self) {
        if self.marks.is_some() {
            self.work.entries += self.files.len() as u64;
        }
        let Some(marks) = &self.marks else {
            return;
        };
        let mut wanted: HashMap<FileKey, &str> = HashMap::new();
        for (path, entry) in &self.files {
            if let Some(state) = &entry.last {
                wanted.entry(state.key).or_insert(path);
            }
        }
        self.applied_marks.retain(|key, path| {
            let keep = wanted.contains_key(key);
            if !keep {
                marks.unmark(path, Marked::File(*key));
            }
            keep
        });
        let mut dirs = ancestors(self.files.keys().chain(self.dirs.values()));
        // Directories files may appear in are marked themselves, and told
        // of entries always; so is the nearest directory left above a path
        // that has lost its own.
        for (key, path) in &self.dirs {
            dirs.entry(path.as_str()).or_insert(*key);
        }
        self.marked_dirs.retain(|key, path| {
            let keep = dirs.get(path.as_str()) == Some(key);
            if !keep {
                marks.unmark(path, Marked::Dir(*key));
            }
            keep
        });
        let waiting: HashSet<FileKey> = self
            .files
            .keys()
            .filter_map(|p| nearest_existing_parent(p, &dirs))
            .chain(self.dirs.keys().copied())
            .collect();
        for (&path, &key) in &dirs {
            if self.marked_dirs.contains_key(&key) || self.unmarkable.contains(&key) {
                continue;
            }
            match marks.mark_dir(path, key) {
                Ok(()) => {
                    self.marked_dirs.insert(key, path.to_string());
                }
                Err(FanotifyError::Moved { .. }) => {}
                Err(err) => {
                    tracing::warn!(
                        err = %error_chain(&err),
                        path,
                        "cannot mark a directory of watched files for fanotify; renaming it away goes unseen"
                    );
                    self.unmarkable.insert(key);
                }
            }
        }
        for (key, path) in wanted {
            if self.applied_marks.contains_key(&key) || self.unmarkable.contains(&key) {
                continue;
            }
            match marks.mark(path, key) {
                Ok(()) => {
                    self.applied_marks.insert(key, path.to_string());
                }
                // Changed since it was looked at: the change is being
                // settled and the next refresh marks what is there.
                Err(FanotifyError::Moved { .. }) => {}
                Err(err) => {
                    tracing::warn!(
                        err = %error_chain(&err),
                        path,
                        "cannot mark a watched file for fanotify; changes that bypass the syscall probes go unseen for it"
                    );
                    self.unmarkable.insert(key);
                }
            }
        }
        for key in waiting
            .difference(&self.entry_dirs)
            .copied()
            .collect::<Vec<_>>()
        {
            if let Some(path) = self.marked_dirs.get(&key)
                && marks.watch_entries(path, key, true).is_ok()
            {
                self.entry_dirs.insert(key);
            }
        }
        for key in self
            .entry_dirs
            .difference(&waiting)
            .copied()
            .collect::<Vec<_>>()
        {
            if let Some(path) = self.marked_dirs.get(&key) {
                let _ = marks.watch_entries(path, key, false);
            }
            self.entry_dirs.remove(&key);
        }
    }

    /// Marks the file `key` just taken in at `path` (its directories are
    /// marked already: it was created in a watched one).
    pub(super) fn mark_new(&mut self, path: &str, key: FileKey) {
        let Some(marks) = &self.marks else {
            return;
        };
        if self.applied_marks.contains_key(&key) {
            return;
        }
        match marks.mark(path, key) {
            Ok(()) => {
                self.applied_marks.insert(key, path.to_string());
            }
            Err(FanotifyError::Moved { .. }) => {}
            Err(err) => {
                tracing::warn!(err = %error_chain(&err), path, "cannot mark a watched file for fanotify");
                self.unmarkable.insert(key);
            }
        }
    }

    /// Marks `key`, about to be renamed over `path` by a restore, by its
    /// temporary name.
    pub(super) fn mark_ahead(&mut self, path: &str, key: FileKey, temp: &Path) {
        let Some(marks) = &self.marks else {
            return;
        };
        // A revert that stopped waiting has renamed it already.
        let marked = marks
            .mark(&temp.to_string_lossy(), key)
            .or_else(|_| marks.mark(path, key));
        match marked {
            Ok(()) => {
                self.applied_marks.insert(key, path.to_string());
            }
            Err(err) => tracing::warn!(
                err = %error_chain(&err),
                path,
                "marking a restored file ahead of its rename"
            ),
        }
    }
}

/// Every directory on the way to `paths` (but `/`), with its identity now.
fn ancestors<'a>(paths: impl Iterator<Item = &'a String>) -> HashMap<&'a str, FileKey> {
    let mut dirs = HashMap::new();
    for path in paths {
        let mut at = path.as_str();
        while let Some(end) = at.rfind('/') {
            at = &at[..end];
            if at.is_empty() || dirs.contains_key(at) {
                break;
            }
            if let Ok(meta) = std::fs::symlink_metadata(at)
                && meta.is_dir()
            {
                use std::os::unix::fs::MetadataExt as _;
                let key = FileKey {
                    dev: fsio::encode_dev(meta.dev()),
                    _pad: 0,
                    ino: meta.ino(),
                };
                dirs.insert(at, key);
            }
        }
    }
    dirs
}

/// The identity of the nearest directory above `path` that exists, when
/// `path`'s own directory does not (it was renamed away or removed).
fn nearest_existing_parent(path: &str, dirs: &HashMap<&str, FileKey>) -> Option<FileKey> {
    let parent = &path[..path.rfind('/')?];
    if parent.is_empty() || dirs.contains_key(parent) {
        return None;
    }
    let mut at = parent;
    while let Some(end) = at.rfind('/') {
        at = &at[..end];
        if let Some(key) = dirs.get(if at.is_empty() { "/" } else { at }) {
            return Some(*key);
        }
    }
    None
}
