//! Looking through a marked directory that changed, in three steps: what
//! to look at is taken from the list ([`WatchList::scan_job`]), the looking
//! is done where it may hang ([`ScanJob::run`], on the filesystem pool),
//! and what it found is taken in ([`WatchList::apply_scan`]). Only the
//! middle step touches the filesystem.
use std::{
    collections::{HashMap, HashSet},
    ops::Bound,
    path::Path,
};

use globset::GlobSet;
use reflex_wire::FileKey;

use super::WatchList;
use crate::fsio::{self, FileState};

/// Entries of a directory looked through for new files on one notice.
const MAX_SCAN: usize = 100_000;

/// What to look at in a changed directory.
#[derive(Debug)]
pub struct ScanJob {
    /// The directory, as the list knows it.
    pub dir: String,
    prefix: String,
    /// Directories of watched paths under it, to see whether they are gone.
    parents: Vec<String>,
    /// Whether to look through its entries for files policies cover.
    list: bool,
    patterns: Option<GlobSet>,
    /// Watched paths under it (entries already taken in).
    known: HashSet<String>,
    /// Every directory globs and literal paths put files in.
    dir_paths: Vec<String>,
}

/// What looking through a changed directory found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Per directory of a watched path under it: whether it is gone.
    lost: HashMap<String, bool>,
    /// New regular files policies cover, with their state.
    appeared: Vec<(String, Option<FileState>)>,
    /// Whether the entries were looked through, and how many.
    listed: Option<u64>,
    /// Every watched directory's identity now.
    dirs: Vec<(String, Option<FileKey>)>,
}

impl ScanJob {
    /// Looks (may hang with the filesystem).
    pub fn run(self) -> Scan {
        let mut scan = Scan::default();
        for parent in self.parents {
            let lost = !Path::new(&parent).is_dir();
            scan.lost.insert(parent, lost);
        }
        if self.list
            && let Ok(entries) = std::fs::read_dir(&self.dir)
        {
            let mut listed = 0;
            for entry in entries.flatten().take(MAX_SCAN) {
                listed += 1;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = format!("{}{name}", self.prefix);
                if !self.known.contains(&path)
                    && self.patterns.as_ref().is_some_and(|p| p.is_match(&path))
                    && !fsio::is_own_temp(&name)
                    && entry.file_type().is_ok_and(|t| t.is_file())
                {
                    let state = fsio::state(Path::new(&path)).ok().flatten();
                    scan.appeared.push((path, state));
                }
            }
            scan.listed = Some(listed);
        }
        scan.dirs = self
            .dir_paths
            .into_iter()
            .map(|dir| {
                let key = super::dir_key(Path::new(&dir));
                (dir, key)
            })
            .collect();
        scan
    }
}

impl WatchList {
    /// What to look at for a notice that the marked directory `key`
    /// changed (`entry`: an entry appeared in it); `None` when it is not a
    /// marked directory.
    pub fn scan_job(&self, key: &FileKey, entry: bool) -> Option<ScanJob> {
        let dir = self.marked_dirs.get(key)?.clone();
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut parents = HashSet::new();
        let mut known = HashSet::new();
        for (p, _) in self.under(&prefix) {
            if entry {
                parents.insert(p.rfind('/').map_or("", |end| &p[..end]).to_string());
            }
            known.insert(p.clone());
        }
        Some(ScanJob {
            list: self.dirs.get(key) == Some(&dir),
            dir,
            prefix,
            parents: parents.into_iter().collect(),
            patterns: self.patterns.clone(),
            known,
            dir_paths: self.dir_paths.iter().cloned().collect(),
        })
    }

    fn under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a super::WatchedFile)> {
        self.files
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(p, _)| p.starts_with(prefix))
    }

    /// Takes in what looking through the marked directory `key` found
    /// (`None`: its filesystem did not answer, and nothing is known to have
    /// changed). Returns the watched paths under it, whose files are to be
    /// looked at again, and the files policies cover that appeared in it
    /// without a creating `open` the probes saw (`mknod`, io_uring, a
    /// rename or link into it), now watched.
    /// With `entry` (an entry appeared, the directory itself stayed), only
    /// paths that have no file or have lost their directory are looked at
    /// again, and the whole list is synced only when a directory changed
    /// or a path lost its own: a busy directory must cost neither a hash of
    /// every watched file in it nor a pass over the list per new entry.
    pub fn apply_scan(
        &mut self,
        key: &FileKey,
        entry: bool,
        scan: Option<Scan>,
    ) -> (Vec<String>, Vec<String>) {
        let Some(dir) = self.marked_dirs.get(key).cloned() else {
            return (Vec::new(), Vec::new());
        };
        let scan = scan.unwrap_or_default();
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut paths = Vec::new();
        let mut lost_any = false;
        let mut looked = 0;
        for (p, w) in self.under(&prefix) {
            looked += 1;
            let parent = p.rfind('/').map_or("", |end| &p[..end]);
            let lost = entry && scan.lost.get(parent).copied().unwrap_or(false);
            lost_any |= lost;
            if !entry || w.last.is_none() || lost {
                paths.push(p.clone());
            }
        }
        self.work.entries += looked;
        if let Some(listed) = scan.listed {
            self.work.dir_scans += 1;
            self.work.entries += listed;
        }
        let mut appeared = Vec::new();
        for (path, state) in scan.appeared {
            if !self.files.contains_key(&path) && self.add_with(&path, state) {
                appeared.push(path);
            }
        }
        let mut same_dirs = true;
        if !scan.dirs.is_empty() {
            let before: HashSet<FileKey> = self.dirs.keys().copied().collect();
            self.dirs.clear();
            for (dir, key) in scan.dirs {
                if let Some(key) = key {
                    self.dirs.insert(key, dir.clone());
                }
                self.dir_paths.insert(dir);
            }
            same_dirs =
                self.dirs.len() == before.len() && self.dirs.keys().all(|k| before.contains(k));
        }
        if !entry || !same_dirs || lost_any {
            self.work.full_passes += 1;
            self.sync_kernel();
            self.sync_marks();
        }
        (paths, appeared)
    }

    /// Looks through the marked directory `key` here and now (no pool:
    /// tests and tools): [`WatchList::scan_job`], run, applied.
    pub fn dir_changed(&mut self, key: &FileKey, entry: bool) -> (Vec<String>, Vec<String>) {
        let scan = self.scan_job(key, entry).map(ScanJob::run);
        self.apply_scan(key, entry, scan)
    }
}
