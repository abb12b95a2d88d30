//! What the filesystem pool answers the file settler, and looking through
//! a watched directory that changed without waiting on its filesystem: the
//! notice waits, with any later one about the same directory, and is taken
//! when the look comes back, in order. A directory that does not answer
//! costs its own files: what appeared in it unseen is taken in at its next
//! change. (A file first met in a creating open is watched by name at once
//! and by identity from its first look, which runs on the pool.)
use std::{
    collections::{HashMap, VecDeque},
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
    fsio::pool::{JobKey, PoolError},
};

/// What the filesystem pool answers the file settler.
#[derive(Debug)]
pub enum FsDone {
    /// A look at a changed file.
    Look(Looked),
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

/// Directory notices waiting for their directory's look.
#[derive(Default)]
pub(super) struct Intakes {
    /// Per directory: the notices waiting for its look, the first in flight.
    scans: HashMap<FileKey, VecDeque<Record>>,
}

impl FileSettler {
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
