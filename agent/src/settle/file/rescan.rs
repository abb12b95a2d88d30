//! Batching new entries of a watched directory: fanotify tells of each
//! entry created in a directory globs cover, and a look through the
//! directory finds the files the probes did not see made (`mknod`,
//! io_uring, a rename or link into it). A burst of ten thousand new files
//! must not cost ten thousand looks through a directory that grows to ten
//! thousand entries: notices are gathered per directory and answered by
//! one look, at least [`RESCAN_DELAY`] after the first, and a directory
//! that cost much to look through waits in proportion before the next
//! (at most [`MAX_DELAY`]), so the work stays linear in what appears.
//! One turn of the settler looks through directories until it has gone
//! through `watch.max_scan` entries; the others wait for the next turn, so
//! a burst spread over many directories does not hold up other events. A
//! look that stopped at its budget of covered files continues in a later
//! turn.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use reflex_wire::FileKey;

use super::FileSettler;
use crate::events::{
    Body, Record,
    file::{FileChange, MatchedBy},
};

/// Least wait between a directory's first new entry and the look.
const RESCAN_DELAY: Duration = Duration::from_millis(10);

/// Wait charged per entry the last look through a directory cost.
const PER_ENTRY: Duration = Duration::from_micros(5);

/// Most wait.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Directories waiting for their look, and what the last looks cost.
#[derive(Default)]
pub(super) struct Rescans {
    due: HashMap<FileKey, (Instant, Record)>,
    last: HashMap<FileKey, (Instant, u64)>,
}

impl FileSettler {
    /// Takes `record` when it tells of an entry appearing in a marked
    /// directory: the directory is looked through later, once for every
    /// such notice until then. Notices of several writers make one that
    /// names none (it authorises nothing).
    pub(super) fn defer_rescan(&mut self, record: &Record, now: Instant) -> bool {
        let Body::File(raw) = &record.body else {
            return false;
        };
        if raw.matched_by != MatchedBy::Fanotify
            || raw.ino != 0
            || raw.change != Some(FileChange::Attrib)
        {
            return false;
        }
        let dir = FileKey {
            dev: raw.dir_dev,
            _pad: 0,
            ino: raw.dir_ino,
        };
        if let Some((_, waiting)) = self.rescans.due.get_mut(&dir) {
            if waiting.process.pid != record.process.pid {
                waiting.process = Default::default();
            }
            return true;
        }
        let wait = self
            .rescans
            .last
            .get(&dir)
            .map_or(RESCAN_DELAY, |&(at, cost)| {
                let spaced = at + PER_ENTRY.saturating_mul(cost.try_into().unwrap_or(u32::MAX));
                spaced.saturating_duration_since(now).max(RESCAN_DELAY)
            })
            .min(MAX_DELAY);
        self.rescans.due.insert(dir, (now + wait, record.clone()));
        self.show_backlog();
        true
    }

    /// Shows the directories waiting for their look.
    fn show_backlog(&self) {
        if let Some(metrics) = &self.metrics {
            metrics
                .watch
                .scan_backlog
                .set(self.rescans.due.len() as i64);
        }
    }

    /// When the next directory is due for its look.
    pub(super) fn next_rescan(&self) -> Option<Instant> {
        self.rescans.due.values().map(|(at, _)| *at).min()
    }

    /// Looks through every directory that is due.
    pub(super) fn rescan_due(&mut self, now: Instant) {
        if self.next_rescan().is_none_or(|at| at > now) {
            return;
        }
        let due: Vec<FileKey> = self
            .rescans
            .due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(dir, _)| *dir)
            .collect();
        self.rescans
            .last
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < MAX_DELAY);
        let budget = self.watch.max_scan() as u64;
        let mut spent = 0;
        for dir in due {
            if spent >= budget {
                break;
            }
            let Some((_, record)) = self.rescans.due.remove(&dir) else {
                continue;
            };
            let mut again = record.clone();
            let before = self.watch.work().entries;
            self.take(record, now);
            let cost = self.watch.work().entries - before;
            spent += cost;
            if let Some(metrics) = &self.metrics {
                metrics.watch.scan_entries.inc_by(cost);
            }
            self.rescans.last.insert(dir, (now, cost));
            if self.watch.unfinished(&dir) {
                // The rest of its covered files, in a later turn; they were
                // made by whoever made them, not by this notice's writer.
                again.process = Default::default();
                let at = now + RESCAN_DELAY;
                self.rescans.due.insert(dir, (at, again));
            }
        }
        self.show_backlog();
    }
}

#[cfg(test)]
#[path = "rescan_tests.rs"]
mod tests;
