//! Looking at files off the settler's task. A due change is handed to the
//! filesystem pool ([`fsio::pool`]) and the settler goes on with other
//! events; the look comes back as a [`Looked`] message and is settled
//! then. One look per file is in flight: a change arriving meanwhile
//! waits and is settled after it. A look that times out (a hung
//! filesystem) is reported once, unverified, and retried every [`RETRY`]
//! until the filesystem answers.
use std::{
    path::Path,
    time::{Instant, SystemTime},
};

use tokio::sync::mpsc;

use super::{
    FileSettler, Pending, RETRY, record::after_state, record::snapshots, record::strongest,
};
use crate::{
    events::file::Snapshot,
    events::{Body, Record},
    fsio::{
        self, FileState,
        pool::{FsPool, JobKey, PoolError},
    },
};

/// What a look at a file found.
#[derive(Debug)]
pub struct Look {
    /// Its state; `None` when no regular file is there.
    pub(super) current: Option<FileState>,
    /// Its state as events carry it, hashed when asked.
    pub(super) after: Option<Snapshot>,
    /// Its modification time.
    pub(super) modified: Option<SystemTime>,
    /// What is there instead of a regular file.
    pub(super) found: Option<&'static str>,
}

impl Look {
    /// Looks at `path` now, reading its content when `hash`.
    pub fn take(path: &Path, hash: bool) -> Self {
        let current = fsio::state(path).ok().flatten();
        let after = after_state(path, current.as_ref(), hash);
        let modified = std::fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .ok();
        let found = current.is_none().then(|| fsio::odd_kind(path)).flatten();
        Self {
            current,
            after,
            modified,
            found,
        }
    }
}

/// A look's result, back at the settler.
#[derive(Debug)]
pub struct Looked {
    pub(super) path: String,
    pub(super) result: Result<Look, PoolError>,
}

/// The pool looks run on, and where their results go.
pub(super) struct Looker {
    pool: FsPool,
    tx: mpsc::UnboundedSender<Looked>,
}

impl FileSettler {
    /// Looks at files on `pool`; the results come on the receiver
    /// [`FileSettler::take_looked`] returns, for [`FileSettler::looked`].
    pub fn with_pool(mut self, pool: FsPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        self.looker = Some(Looker { pool, tx });
        self.looked_rx = Some(rx);
        self
    }

    /// The looks' results (once).
    pub fn take_looked(&mut self) -> Option<mpsc::UnboundedReceiver<Looked>> {
        self.looked_rx.take()
    }

    /// Whether a look at `path` is in flight.
    pub(super) fn looking(&self, path: &str) -> bool {
        self.in_flight.contains_key(path)
    }

    /// Settles `pending` now when there is no pool, or sends its look to
    /// the pool and returns nothing yet.
    pub(super) fn dispatch(
        &mut self,
        path: String,
        pending: Pending,
        now: Instant,
    ) -> Option<Record> {
        let Some(looker) = &self.looker else {
            return self.settle(&path, pending, now);
        };
        let pool = looker.pool.clone();
        let tx = looker.tx.clone();
        let hash = self.wants_hash(&path);
        let dev = self
            .watch
            .get(&path)
            .and_then(|w| w.last.as_ref())
            .map_or(0, |s| s.key.dev);
        self.in_flight.insert(path.clone(), pending);
        let key = JobKey {
            path: path.clone(),
            dev,
        };
        let job_path = path.clone();
        pool.submit(
            key,
            "settle",
            move || Look::take(Path::new(&job_path), hash),
            // The settler outlives the pool's answers but at shutdown.
            move |result| {
                let _ = tx.send(Looked { path, result });
            },
        );
        None
    }

    /// Settles the change a look was for, and whatever waited behind it.
    pub fn looked(&mut self, looked: Looked, now: Instant) -> Vec<Record> {
        let Looked { path, result } = looked;
        let Some(pending) = self.in_flight.remove(&path) else {
            return self.expire(now);
        };
        let mut out = Vec::new();
        match result {
            Ok(look) => {
                if self.hung.remove(&path) {
                    tracing::info!(path, "the file's filesystem answers again");
                }
                if let Some(pending) = self.relook_deploy(&path, pending, now) {
                    out.extend(self.settle_with(&path, pending, look, now));
                }
            }
            Err(err) => out.extend(self.unanswered(&path, pending, &err, now)),
        }
        self.forget_gone(&path);
        out.extend(self.expire(now));
        out
    }

    /// A look that got no answer: the change is reported once as
    /// unverified (so a revert is tried and its alert says why it could
    /// not finish), then looked at again every [`RETRY`].
    fn unanswered(
        &mut self,
        path: &str,
        pending: Pending,
        err: &PoolError,
        now: Instant,
    ) -> Option<Record> {
        let first = self.hung.insert(path.to_string());
        if first {
            tracing::warn!(path, error = %err, "a watched file could not be looked at; its change is reported unverified");
        }
        let report = first.then(|| (pending.record.clone(), pending.changes.clone()));
        let killed = pending.killed;
        let mut retry = pending;
        retry.deadline = now + RETRY;
        retry.hold_until = retry.hold_until.max(retry.deadline);
        retry.last_look = true;
        if let Some(newer) = self.pending.get_mut(path) {
            newer.deadline = newer.deadline.min(retry.deadline);
        } else {
            self.pending.insert(path.to_string(), retry);
        }
        let (mut record, changes) = report?;
        let baseline = self
            .baselines
            .as_ref()
            .map(|store| snapshots(store, path))
            .unwrap_or_default();
        if let Body::File(raw) = &mut record.body {
            raw.path = Some(path.to_string());
            raw.change = Some(strongest(&changes));
            raw.changes = changes;
            raw.killed = killed;
            raw.baseline = baseline;
            raw.after = None;
            raw.unverified = Some(err.to_string());
        }
        Some(record)
    }
}
