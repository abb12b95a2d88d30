//! Taking in what appears in watched directories without waiting on their
//! filesystem: a file first met in a creating open is looked at (its
//! identity, for the kernel's and fanotify's watch) on the filesystem
//! pool, and a directory that changed is looked through there. The record
//! that told of it waits, with any later one about the same file or
//! directory, and is taken when the answer comes back, in order: the file
//! is watched before its change is held, and its change is judged whole
//! as before. A filesystem that does not answer costs its own files: the
//! new file is watched by name, its change reported unverified.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::Path,
    time::Instant,
};

use reflex_wire::FileKey;

use super::{
    FileSettler,
    look::Looked,
    watch::{Scan, ScanJob},
};
use crate::{
    events::{Body, Record},
    fsio::{
        self, FileState,
        pool::{JobKey, PoolError},
    },
};

/// What the filesystem pool answers the file settler.
#[derive(Debug)]
pub enum FsDone {
    /// A look at a changed file.
    Look(Looked),
    /// The first look at a file created in a watched directory.
    Intake {
        /// The file.
        path: String,
        /// Its state, `None` when no regular file is there.
        result: Result<Option<FileState>, PoolError>,
    },
    /// A walk of a path or glob of a set being taken into use.
    Walk {
        /// Which reload it is for.
        generation: u64,
        /// The path or glob.
        glob: String,
        /// What it found.
        result: Result<super::watch::Walk, PoolError>,
    },
    /// A look through a watched directory that changed.
    Scan {
        /// The directory.
        dir: FileKey,
        /// Whether an entry appeared (rather than the directory moving).
        entry: bool,
        /// What it found.
        result: Result<Scan, PoolError>,
    },
}

impl From<Looked> for FsDone {
    fn from(looked: Looked) -> Self {
        Self::Look(looked)
    }
}

/// Records waiting for a first look.
#[derive(Default)]
pub(super) struct Intakes {
    /// Per new file: the records about it, and the writers among them that
    /// exited meanwhile.
    files: HashMap<String, (Vec<Record>, HashSet<u32>)>,
    /// Per directory: the notices waiting for its look, the first in flight.
    scans: HashMap<FileKey, VecDeque<Record>>,
    /// A file just taken in, while its records are taken: whether the
    /// first of them made it.
    taken: HashMap<String, bool>,
}

impl Intakes {
    /// Whether `path` was just taken in, and then whether it is new.
    pub(super) fn taken(&mut self, path: &str) -> Option<bool> {
        self.taken.remove(path)
    }

    /// The writer `pid` exited: its changes waiting here are final.
    pub(super) fn exited(&mut self, pid: u32) {
        for (records, exited) in self.files.values_mut() {
            if records.iter().any(|r| r.process.pid == pid) {
                exited.insert(pid);
            }
        }
    }
}

impl FileSettler {
    /// Holds `record`, about the new file `path`, until the pool has looked
    /// at the file.
    pub(super) fn intake(&mut self, path: String, record: Record) {
        if let Some((records, _)) = self.intakes.files.get_mut(&path) {
            records.push(record);
            return;
        }
        let Some(looker) = &self.looker else {
            return;
        };
        let dev = match &record.body {
            Body::File(raw) => raw.dir_dev,
            _ => 0,
        };
        let (pool, tx) = (looker.pool.clone(), looker.tx.clone());
        self.intakes
            .files
            .insert(path.clone(), (vec![record], HashSet::new()));
        let job_path = path.clone();
        pool.submit(
            JobKey {
                path: path.clone(),
                dev,
            },
            "watch",
            move || fsio::state(Path::new(&job_path)).ok().flatten(),
            move |result| {
                let _ = tx.send(FsDone::Intake { path, result });
            },
        );
    }

    /// Watches the new file `path` as the pool found it, and takes the
    /// records that waited for it.
    pub(super) fn intake_done(
        &mut self,
        path: String,
        result: Result<Option<FileState>, PoolError>,
        now: Instant,
    ) -> Vec<Record> {
        let Some((records, exited)) = self.intakes.files.remove(&path) else {
            return self.expire(now);
        };
        let state = result.unwrap_or_else(|err| {
            tracing::warn!(path, error = %err, "a file created in a watched directory could not be looked at; its change is reported unverified");
            None
        });
        let created = self.watch.add_with(&path, state);
        for (i, record) in records.into_iter().enumerate() {
            self.intakes.taken.insert(path.clone(), i == 0 && created);
            self.take(record, now);
        }
        self.intakes.taken.remove(&path);
        if let Some(pending) = self.pending.get_mut(&path)
            && exited.contains(&pending.writer)
        {
            pending.deadline = now;
            pending.last_look = true;
        }
        self.expire(now)
    }

    /// Looks through the marked directory `dir` for `record`: at once
    /// without a pool (returning what it found), else on the pool, the
    /// record waiting for the answer.
    pub(super) fn scan(
        &mut self,
        dir: FileKey,
        entry: bool,
        record: Record,
    ) -> Option<(Record, Option<Scan>)> {
        let Some(looker) = &self.looker else {
            let scan = self.watch.scan_job(&dir, entry).map(ScanJob::run);
            return Some((record, scan));
        };
        if let Some(waiting) = self.intakes.scans.get_mut(&dir) {
            waiting.push_back(record);
            return None;
        }
        let job = self.watch.scan_job(&dir, entry)?;
        let (pool, tx) = (looker.pool.clone(), looker.tx.clone());
        self.intakes.scans.insert(dir, VecDeque::from([record]));
        pool.submit(
            JobKey {
                path: job.dir.clone(),
                dev: dir.dev,
            },
            "watch",
            move || job.run(),
            move |result| {
                let _ = tx.send(FsDone::Scan { dir, entry, result });
            },
        );
        None
    }

    /// Takes the notice a look through a directory was for, then the ones
    /// that came meanwhile (each looks through it again).
    pub(super) fn scan_done(
        &mut self,
        dir: FileKey,
        entry: bool,
        result: Result<Scan, PoolError>,
        now: Instant,
    ) -> Vec<Record> {
        let Some(mut waiting) = self.intakes.scans.remove(&dir) else {
            return self.expire(now);
        };
        let scan = result
            .inspect_err(|err| {
                tracing::warn!(error = %err, "a watched directory could not be looked through; what appeared in it is taken in at its next change");
            })
            .ok();
        if let Some(record) = waiting.pop_front() {
            self.scanned(record, &dir, entry, scan, now);
        }
        for record in waiting {
            self.take(record, now);
        }
        self.expire(now)
    }

    /// Holds the changes a directory notice (`record`) means, with what
    /// looking through the directory found.
    pub(super) fn scanned(
        &mut self,
        record: Record,
        dir: &FileKey,
        entry: bool,
        scan: Option<Scan>,
        now: Instant,
    ) {
        let Body::File(raw) = &record.body else {
            return;
        };
        let Some(change) = raw.change else {
            return;
        };
        let (mut paths, appeared) = self.watch.apply_scan(dir, entry, scan);
        paths.extend(appeared.iter().cloned());
        self.take_paths(&record, paths, &appeared, &[change], now);
    }
}
