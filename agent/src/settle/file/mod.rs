//! The settler's file half: which files are watched (`watch`), their
//! recorded good state (`baseline`), and turning the kernel's raw events
//! into one settled change per file, verified against the file.
//!
//! A write is settled when its writer closes the file or exits, so a later
//! write in the same open cannot undo a revert; a writer that keeps the file
//! open is settled after [`HOLD`], and a revert then renames a fresh file
//! over the path: the writer keeps writing to the old, now unlinked inode.
pub mod baseline;
pub mod watch;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    time::{Duration, Instant},
};

use reflex_wire::FileKey;

use crate::{
    events::{
        Body, Kind, ProcessContext, Record,
        clock::BootClock,
        file::{File, FileChange, MatchedBy, Snapshot},
    },
    fsio,
    loader::WatchMaps,
    logging::error_chain,
    policy::{
        Action, PolicySet,
        model::Trigger,
        value::{PathGlob, glob_set},
    },
};
use baseline::BaselineStore;
use watch::WatchList;

/// How long a writer may hold a watched file open before its change is
/// settled anyway.
pub const HOLD: Duration = Duration::from_millis(500);

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
}

/// Watch list, baselines and unsettled changes.
pub struct FileSettler {
    watch: WatchList,
    baselines: Option<BaselineStore>,
    pending: HashMap<String, Pending>,
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
        }
    }

    /// What is watched.
    pub fn watch(&self) -> &WatchList {
        &self.watch
    }

    /// Watches what `set` covers, records missing baselines, and returns a
    /// `drift` record for each file that differs from its baseline (changes
    /// made while the agent was not running).
    pub fn configure(&mut self, set: &PolicySet) -> Vec<Record> {
        self.watch.configure(set);
        let Some(baselines) = self.baselines.as_mut() else {
            return Vec::new();
        };
        let mut drifted = Vec::new();
        for policy in set.policies() {
            let Trigger::File { paths, .. } = &policy.trigger else {
                continue;
            };
            let Some(source) = policy.actions.iter().find_map(|a| match a {
                Action::Revert { source } => Some(source.clone()),
                _ => None,
            }) else {
                continue;
            };
            let Some(matcher) = glob_set(paths.iter().map(PathGlob::glob)) else {
                continue;
            };
            let covered: Vec<String> = self
                .watch
                .paths()
                .filter(|p| matcher.is_match(p))
                .map(str::to_string)
                .collect();
            for path in covered {
                let file = Path::new(&path);
                match fsio::remove_stale_temps(file) {
                    Ok(0) => {}
                    Ok(removed) => tracing::warn!(
                        path,
                        removed,
                        "removed temporary files an interrupted revert left"
                    ),
                    Err(err) => {
                        tracing::debug!(path, error = %error_chain(&err), "looking for interrupted reverts")
                    }
                }
                match baselines.get(&policy.name, &path) {
                    Some(b) => {
                        if !b.matches(file).unwrap_or(false)
                            && !drifted.iter().any(|r: &Record| file_path(r) == Some(&path))
                        {
                            drifted.push(drift_record(&path, baselines));
                        }
                    }
                    None if file.exists() => {
                        match baselines.record(&policy.name, file, source.as_deref()) {
                            Ok(b) => tracing::info!(
                                policy = policy.name,
                                path,
                                sha256 = b.sha256,
                                "baseline recorded"
                            ),
                            Err(err) => {
                                tracing::error!(policy = policy.name, path, error = %error_chain(&err), "recording a baseline")
                            }
                        }
                    }
                    None => tracing::warn!(
                        policy = policy.name,
                        path,
                        "watched file is missing and has no baseline"
                    ),
                }
            }
        }
        drifted
    }

    /// Takes a raw file event from the kernel; returns the changes that are
    /// settled now.
    pub fn ingest(&mut self, record: Record, now: Instant) -> Vec<Record> {
        let Body::File(raw) = &record.body else {
            return self.expire(now);
        };
        let Some(change) = raw.change else {
            return self.expire(now);
        };
        let key = FileKey {
            dev: raw.dev,
            _pad: 0,
            ino: raw.ino,
        };
        let mut changes = vec![change];
        let paths: Vec<String> = match raw.matched_by {
            MatchedBy::Inode => self.watch.paths_of(&key).to_vec(),
            MatchedBy::Dir => {
                let dir = FileKey {
                    dev: raw.dir_dev,
                    _pad: 0,
                    ino: raw.dir_ino,
                };
                match self.watch.dir_path(&dir) {
                    Some(dir) => {
                        let path = format!("{}/{}", dir.trim_end_matches('/'), raw.name);
                        if !self.watch.covers(&path) {
                            Vec::new()
                        } else {
                            if self.watch.add(&path)
                                && raw.open_flags & reflex_wire::file::open::O_CREAT != 0
                            {
                                changes.insert(0, FileChange::Create);
                            }
                            vec![path]
                        }
                    }
                    None => Vec::new(),
                }
            }
            MatchedBy::Name => {
                let mut paths = self.watch.paths_named_like(&raw.arg_path).to_vec();
                if !raw.arg_path2.is_empty() {
                    paths.extend(self.watch.paths_named_like(&raw.arg_path2).iter().cloned());
                }
                paths.sort();
                paths.dedup();
                paths
            }
        };
        for path in paths {
            let pending = self.pending.entry(path).or_insert_with(|| Pending {
                record: record.clone(),
                changes: Vec::new(),
                writer: record.process.pid,
                deadline: now + HOLD,
                hold_until: now + HOLD,
                last_look: false,
                killed: false,
                by_name_only: true,
            });
            pending.changes.extend(changes.iter().copied());
            pending.killed |= raw.killed;
            pending.by_name_only &= raw.matched_by == MatchedBy::Name;
            match change {
                FileChange::Write => {}
                FileChange::CloseWrite => pending.deadline = now,
                _ => {
                    pending.deadline = now;
                    pending.last_look = true;
                }
            }
        }
        self.expire(now)
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
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Settles every change whose time has come; drops those that turn out
    /// to have changed nothing.
    pub fn expire(&mut self, now: Instant) -> Vec<Record> {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(path, _)| path.clone())
            .collect();
        let mut settled = Vec::new();
        for path in due {
            if let Some(mut pending) = self.pending.remove(&path) {
                pending.last_look |= now >= pending.hold_until;
                if let Some(record) = self.settle(&path, pending, now) {
                    settled.push(record);
                }
            }
        }
        settled
    }

    /// Verifies a change against the file and builds its record; an
    /// unchanged file is looked at again later unless this was the last look.
    fn settle(&mut self, path: &str, mut pending: Pending, now: Instant) -> Option<Record> {
        let file = Path::new(path);
        let current = fsio::state(file).ok().flatten();
        let baseline = self
            .baselines
            .as_ref()
            .map(|store| snapshots(store, path))
            .unwrap_or_default();
        // The content is read only where there is a baseline to compare with.
        let after = after_state(file, current.as_ref(), !baseline.is_empty());
        let unchanged = match baseline.values().next() {
            Some(b) => after.as_ref() == Some(b),
            None => pending.by_name_only && self.watch.get(path).map(|w| &w.last) == Some(&current),
        };
        if unchanged {
            if !pending.last_look {
                pending.deadline = pending.hold_until.max(now);
                self.pending.insert(path.to_string(), pending);
            } else {
                tracing::debug!(path, "file event without a change; dropped");
            }
            return None;
        }
        self.watch.refresh(path);
        let mut record = pending.record;
        let change = strongest(&pending.changes);
        let key = current.map(|s| s.key).unwrap_or_default();
        if let Body::File(raw) = &mut record.body {
            raw.path = Some(path.to_string());
            raw.change = Some(change);
            raw.changes = pending.changes;
            raw.killed = pending.killed;
            raw.baseline = baseline;
            raw.after = after;
            if key.ino != 0 {
                raw.dev = key.dev;
                raw.ino = key.ino;
            }
        }
        Some(record)
    }

    /// Follows `path` to the file a revert put there (a new inode).
    pub fn restored(&mut self, path: &str) {
        self.watch.refresh(path);
    }
}

/// The path of a settled file record.
fn file_path(record: &Record) -> Option<&String> {
    match &record.body {
        Body::File(f) => f.path.as_ref(),
        _ => None,
    }
}

/// The baseline of `path` per policy, as events carry it.
fn snapshots(store: &BaselineStore, path: &str) -> BTreeMap<String, Snapshot> {
    store
        .of_path(path)
        .map(|(policy, b)| (policy.to_string(), b.snapshot()))
        .collect()
}

/// `state` of `path` as events carry it, with the content hash when
/// `hash`; `None` when no regular file is there.
fn after_state(path: &Path, state: Option<&fsio::FileState>, hash: bool) -> Option<Snapshot> {
    let state = state?;
    Some(Snapshot {
        sha256: hash.then(|| fsio::content_hash(path).ok()).flatten(),
        mode: state.mode,
        uid: state.uid,
        gid: state.gid,
        size: state.size,
    })
}

/// The change that says most about what happened.
fn strongest(changes: &[FileChange]) -> FileChange {
    const ORDER: [FileChange; 10] = [
        FileChange::Drift,
        FileChange::Unlink,
        FileChange::Rename,
        FileChange::Truncate,
        FileChange::Create,
        FileChange::Write,
        FileChange::CloseWrite,
        FileChange::Chmod,
        FileChange::Chown,
        FileChange::Link,
    ];
    ORDER
        .into_iter()
        .find(|c| changes.contains(c))
        .unwrap_or(FileChange::Write)
}

/// A record for a file found changed while no process could be watched,
/// with its baselines and its state now.
fn drift_record(path: &str, baselines: &BaselineStore) -> Record {
    let ktime_ns = BootClock::now_ns();
    Record {
        time: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        ktime_ns,
        kind: Kind::File,
        process: ProcessContext::default(),
        body: Body::File(File {
            path: Some(path.to_string()),
            change: Some(FileChange::Drift),
            changes: vec![FileChange::Drift],
            fd: -1,
            baseline: snapshots(baselines, path),
            after: after_state(
                Path::new(path),
                fsio::state(Path::new(path)).ok().flatten().as_ref(),
                true,
            ),
            ..File::default()
        }),
    }
}

#[cfg(test)]
mod tests;
