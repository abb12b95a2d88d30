//! The settler's file half: which files are watched (`watch`), their
//! recorded good state (`baseline`), and turning the kernel's raw events
//! into one settled change per file, verified against the file.
//!
//! A write is settled when its writer closes the file or exits, so a later
//! write in the same open cannot undo a revert; a writer that keeps the file
//! open is settled after [`HOLD`], and a revert then renames a fresh file
//! over the path: the writer keeps writing to the old, now unlinked inode.
pub mod accept;
pub mod baseline;
mod calls;
mod covered;
mod drift;
mod followup;
pub mod history;
pub mod look;
mod recent;
mod record;
mod requeue;
mod rescan;
pub mod store;
mod verify;
pub mod watch;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use accept::{AcceptRules, Marks, Writers, raced_policies};
use calls::names;
use recent::Recent;
use record::{after_state, snapshots};

use reflex_wire::FileKey;

use crate::{
    events::{
        Body, Record,
        file::{FileChange, MatchedBy},
    },
    fsio,
    loader::WatchMaps,
    telemetry::Metrics,
};
use baseline::BaselineStore;
use watch::WatchList;

/// How long a writer may hold a watched file open before its change is
/// settled anyway.
pub const HOLD: Duration = Duration::from_millis(500);

/// How long a change an `accept_from` writer made may stay unsettled while
/// the writer lives: it becomes the baseline when the writer exits, or then.
pub const DEPLOY_HOLD: Duration = Duration::from_secs(5);

/// How long after a failed revert the path is looked at again.
const RETRY: Duration = Duration::from_secs(1);

/// How long a change only fanotify has reported waits for the probes'
/// record of it (which arrives at the end of the call).
const NOTICE_GRACE: Duration = Duration::from_millis(20);

/// A change not yet settled.
struct Pending {
    record: Record,
    changes: Vec<FileChange>,
    writer: u32,
    /// When to look at the file next.
    deadline: Instant,
    /// When to give up waiting for the writer.
    hold_until: Instant,
    /// Whether the next look is the last one (the writer exited, the change
    /// was a single syscall, or the hold ran out). A close is not final: a
    /// shell closes the opened descriptor after dup2 and writes after that.
    last_look: bool,
    killed: bool,
    by_name_only: bool,
    /// Whether only fanotify saw it (the syscall probes did not).
    by_fanotify_only: bool,
    /// Whether every change was an attribute change fanotify reported.
    attrib_only: bool,
    /// Whose change it is, for `accept_from`.
    writers: Writers,
    /// When the first event of the change arrived.
    since: Instant,
    /// A look again after a revert, with no record of its own: the first
    /// record of a real change replaces it whole (writer, hold, close).
    placeholder: bool,
}

/// Watch list, baselines and unsettled changes.
pub struct FileSettler {
    watch: WatchList,
    baselines: Option<BaselineStore>,
    pending: HashMap<String, Pending>,
    accept: AcceptRules,
    marks: Marks,
    recent: Recent,
    rescans: rescan::Rescans,
    metrics: Option<Metrics>,
    /// Where looks at files run; inline without one (tests, tools).
    looker: Option<look::Looker>,
    looked_rx: Option<tokio::sync::mpsc::UnboundedReceiver<look::Looked>>,
    /// Changes whose look is in flight, by path.
    in_flight: HashMap<String, Pending>,
    /// Paths whose filesystem did not answer, reported until it does.
    hung: std::collections::HashSet<String>,
}

impl FileSettler {
    /// A settler mirroring its watch list into `kernel` (none in tests) and
    /// comparing with, and recording into, `baselines` (none for a sensor
    /// that only reports, such as `reflex events`).
    pub fn new(kernel: Option<WatchMaps>, baselines: Option<BaselineStore>) -> Self {
        Self {
            watch: WatchList::new(kernel),
            baselines,
            pending: HashMap::new(),
            accept: AcceptRules::default(),
            marks: Marks::new(),
            recent: Recent::default(),
            rescans: Default::default(),
            metrics: None,
            looker: None,
            looked_rx: None,
            in_flight: HashMap::new(),
            hung: std::collections::HashSet::new(),
        }
    }

    /// Mirrors the watch list into fanotify `marks` too, when there are.
    pub fn with_marks(mut self, marks: Option<crate::fanotify::FileMarks>) -> Self {
        if let Some(marks) = marks {
            self.watch.mark_with(marks);
        }
        self
    }

    /// Takes in at most `max` covered files per look through a directory
    /// or walk of a glob (`watch.max_scan`).
    pub fn with_max_scan(mut self, max: u32) -> Self {
        self.watch.set_max_scan(max);
        self
    }

    /// Counts acceptances in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.watch.with_metrics(metrics.watch.clone());
        self.metrics = Some(metrics);
        self
    }

    /// What is watched.
    pub fn watch(&self) -> &WatchList {
        &self.watch
    }

    /// Takes a raw file event from the kernel; returns the changes that are
    /// settled now.
    pub fn ingest(&mut self, record: Record, now: Instant) -> Vec<Record> {
        if !self.defer_rescan(&record, now) {
            self.take(record, now);
        }
        self.expire(now)
    }

    /// Holds the changes `record` tells of until they settle.
    fn take(&mut self, record: Record, now: Instant) {
        let Body::File(raw) = &record.body else {
            return;
        };
        let Some(change) = raw.change else {
            return;
        };
        let key = FileKey {
            dev: raw.dev,
            _pad: 0,
            ino: raw.ino,
        };
        let mut changes = vec![change];
        let mut created = Vec::new();
        let paths: Vec<String> = match raw.matched_by {
            // A directory on the way to watched files was renamed, exchanged
            // or removed: the paths under it may name other files now.
            MatchedBy::Fanotify if raw.ino == 0 => {
                let dir = FileKey {
                    dev: raw.dir_dev,
                    _pad: 0,
                    ino: raw.dir_ino,
                };
                // Attrib is what the sensor makes of an entry appearing;
                // the directory itself moving or going is rename / unlink.
                let entry = change == FileChange::Attrib;
                let (mut paths, appeared) = self.watch.dir_changed(&dir, entry);
                created.extend(appeared.iter().cloned());
                paths.extend(appeared);
                paths
            }
            MatchedBy::Inode | MatchedBy::Fanotify => {
                let paths = self.watch.paths_of(&key).to_vec();
                // An identity just removed or replaced may be reused at
                // once by a new file (the inode number freed): an open that
                // says where it is, and that is not the file watched at
                // that path, is taken by its directory.
                let stale = !paths.is_empty()
                    && paths.iter().all(|p| {
                        self.watch
                            .get(p)
                            .and_then(|w| w.last.as_ref())
                            .is_none_or(|s| s.key != key)
                    });
                if (paths.is_empty() || stale) && raw.dir_ino != 0 && !raw.name.is_empty() {
                    self.created_in_dir(raw, &mut changes)
                } else {
                    paths
                }
            }
            MatchedBy::Dir => self.created_in_dir(raw, &mut changes),
            MatchedBy::Name => {
                let mut paths = self.watch.paths_named_like(&raw.arg_path).to_vec();
                if !raw.arg_path2.is_empty() {
                    paths.extend(self.watch.paths_named_like(&raw.arg_path2).iter().cloned());
                }
                paths.sort();
                paths.dedup();
                // fanotify reports every change a call by name makes to a
                // marked file (attributes, link count, a rename over it),
                // with its writer and whatever the call was relative to:
                // for those the name match adds nothing but doubt. Another
                // file of the same name, or a relative name resolved
                // against the wrong directory, then cannot spoil an
                // authorised deploy, be taken for its writer, or cost a hash.
                paths.retain(|p| !self.watch.is_marked(p));
                paths
            }
        };
        for path in paths {
            if self.pending.get(&path).is_some_and(|p| p.placeholder) {
                self.pending.remove(&path);
            }
            let first = !self.pending.contains_key(&path);
            let pending = self.pending.entry(path.clone()).or_insert_with(|| Pending {
                record: record.clone(),
                changes: Vec::new(),
                writer: record.process.pid,
                deadline: now + HOLD,
                hold_until: now + HOLD,
                last_look: false,
                killed: false,
                by_name_only: true,
                by_fanotify_only: true,
                attrib_only: true,
                writers: Writers::default(),
                since: now,
                placeholder: false,
            });
            if self.accept.covers(&path) || !self.marks.is_empty() {
                // A call matched by name alone may concern another file of
                // that name: its writer authorises nothing here unless the
                // call named this very path.
                // A fanotify notice without a writer (hidden, or a queue
                // overflow) may be anyone's change: it authorises nothing.
                let unattributed = record.process.pid == 0;
                if !unattributed
                    && (raw.matched_by != MatchedBy::Name
                        || names(&raw.arg_path, &path)
                        || names(&raw.arg_path2, &path))
                {
                    pending
                        .writers
                        .add(&self.accept, &path, &record.process, first);
                } else {
                    pending.writers.spoil();
                }
                let raced = raced_policies(&self.marks, &path, record.ktime_ns, &pending.writers);
                pending.writers.raced.extend(raced);
                if !pending.writers.authorised.is_empty() && self.baselines.is_some() {
                    // An authorised deploy has DEPLOY_HOLD to finish, not
                    // HOLD: a slow one must not be taken whole before its
                    // last call (install's chmod after the copy).
                    pending.hold_until = pending.hold_until.max(pending.since + DEPLOY_HOLD);
                }
            }
            if !first && pending.by_fanotify_only && raw.matched_by != MatchedBy::Fanotify {
                // The probes' record says more (the call, the names, the
                // process as it ran): it speaks for the change.
                pending.record = record.clone();
                pending.writer = record.process.pid;
            }
            if created.contains(&path) {
                pending.changes.push(FileChange::Create);
            }
            pending.changes.extend(changes.iter().copied());
            pending.killed |= raw.killed;
            pending.by_name_only &= raw.matched_by == MatchedBy::Name;
            pending.by_fanotify_only &= raw.matched_by == MatchedBy::Fanotify;
            pending.attrib_only &= change == FileChange::Attrib;
            match change {
                FileChange::Write => {}
                FileChange::CloseWrite => pending.deadline = now,
                _ => {
                    pending.deadline = now;
                    pending.last_look = true;
                }
            }
            if pending.by_fanotify_only {
                // fanotify hears of a write inside the call, before the
                // probes report it at the call's end: give their record
                // the moment it takes to arrive and merge.
                pending.deadline = pending.deadline.max(pending.since + NOTICE_GRACE);
            }
            if created.contains(&path) {
                // A file that appeared unseen is a creation, judged whole
                // when its writer is done, not an attribute notice.
                pending.attrib_only = false;
                pending.last_look = false;
            }
        }
        self.observe(record.ktime_ns);
    }

    /// The watched path an open in a watched directory names (`raw`'s
    /// directory and name), taken in when a policy covers it; a file first
    /// met this way is a `create`.
    fn created_in_dir(
        &mut self,
        raw: &crate::events::file::File,
        changes: &mut Vec<FileChange>,
    ) -> Vec<String> {
        let dir = FileKey {
            dev: raw.dir_dev,
            _pad: 0,
            ino: raw.dir_ino,
        };
        let Some(dir) = self.watch.dir_path(&dir) else {
            return Vec::new();
        };
        let path = format!("{}/{}", dir.trim_end_matches('/'), raw.name);
        if !self.watch.covers(&path) || fsio::is_own_temp(&raw.name) {
            return Vec::new();
        }
        // A file met here first is new, however it was made (a creating
        // open, or `mknod`, io_uring or a rename the probes did not see);
        // a known path with no file is made again by a creating open.
        let creating = raw.open_flags & reflex_wire::file::open::O_CREAT != 0;
        if self.watch.add(&path)
            || (creating && self.watch.get(&path).is_some_and(|w| w.last.is_none()))
        {
            changes.insert(0, FileChange::Create);
        }
        vec![path]
    }

    /// Settles the changes of a writer that exited.
    pub fn process_exited(&mut self, pid: u32, now: Instant) -> Vec<Record> {
        for pending in self.pending.values_mut() {
            if pending.writer == pid {
                pending.deadline = now;
                pending.last_look = true;
            }
        }
        self.expire(now)
    }

    /// The next moment a held change must be settled.
    pub fn next_deadline(&self) -> Option<Instant> {
        let pending = self
            .pending
            .iter()
            .filter(|(path, _)| !self.looking(path))
            .map(|(_, p)| p.deadline);
        pending.chain(self.next_rescan()).min()
    }

    /// Settles every change whose time has come; drops those that turn out
    /// to have changed nothing.
    pub fn expire(&mut self, now: Instant) -> Vec<Record> {
        self.rescan_due(now);
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(path, p)| p.deadline <= now && !self.looking(path))
            .map(|(path, _)| path.clone())
            .collect();
        let mut settled = Vec::new();
        for path in due {
            if let Some(mut pending) = self.pending.remove(&path) {
                pending.last_look |= now >= pending.hold_until;
                settled.extend(self.dispatch(path.clone(), pending, now));
                self.forget_gone(&path);
            }
        }
        settled
    }
}

#[cfg(test)]
mod accept_tests;
#[cfg(test)]
mod created_tests;
#[cfg(test)]
mod look_tests;
#[cfg(test)]
mod tests;
