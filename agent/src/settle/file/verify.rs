//! Settling one change: what a look at the file found (its state, its
//! content hash where there is a baseline) against the baseline and what
//! was last seen, into the record policies judge. The look itself runs on
//! the filesystem pool ([`super::look`]) when the settler has one.
use std::{path::Path, time::Instant};

use super::{
    DEPLOY_HOLD, FileSettler, HOLD, Pending,
    accept::Outcome,
    look::Look,
    recent::Seen,
    record::{after_state, snapshots, strongest},
};
use crate::{
    events::{Body, Record, file::FileChange},
    fsio,
};

impl FileSettler {
    /// Verifies a change against the file and builds its record; an
    /// unchanged file is looked at again later unless this was the last look.
    pub(super) fn settle(&mut self, path: &str, pending: Pending, now: Instant) -> Option<Record> {
        let hash = self.wants_hash(path);
        let look = Look::take(Path::new(path), hash);
        self.settle_with(path, pending, look, now)
    }

    /// Whether a look at `path` reads its content (there is a baseline to
    /// compare with); brings the baseline store up to date first.
    pub(super) fn wants_hash(&mut self, path: &str) -> bool {
        if let Some(store) = self.baselines.as_mut() {
            store.refresh();
        }
        self.baselines
            .as_ref()
            .is_some_and(|store| store.of_path(path).next().is_some())
    }

    /// [`FileSettler::settle`] with what a look at the file found.
    pub(super) fn settle_with(
        &mut self,
        path: &str,
        mut pending: Pending,
        look: Look,
        now: Instant,
    ) -> Option<Record> {
        if !pending.writers.raced.is_empty() {
            let raced = std::mem::take(&mut pending.writers.raced);
            self.withdraw(path, &raced);
            pending.writers.authorised.clear();
        }
        let file = Path::new(path);
        let Look {
            current,
            after,
            modified,
            found,
        } = look;
        let baseline = self
            .baselines
            .as_ref()
            .map(|store| snapshots(store, path))
            .unwrap_or_default();
        let unchanged = match baseline.values().next() {
            Some(b) => after.as_ref().is_some_and(|a| a.agrees_with(b)),
            // Without a baseline: a file known gone that is still gone (a
            // late notice about a removed file) is no change either.
            None => {
                let last = self.watch.get(path).map(|w| &w.last);
                ((pending.by_name_only || pending.attrib_only) && last == Some(&current))
                    || (current.is_none() && last == Some(&None))
            }
        };
        let seen = Seen {
            state: current.clone(),
            after: after.clone(),
            modified,
        };
        if !unchanged && self.recent.repeats(path, &seen, now) {
            // The other view of a change already reported: fanotify's notice
            // or the probes' record arriving after the other settled it,
            // often before the revert is done.
            tracing::debug!(path, "change already settled; the later view of it dropped");
            self.watch.refresh_to(path, current);
            return None;
        }
        if unchanged {
            // A rename of identical content (a rollback, a deploy of the same
            // version) leaves a new inode at the path: watch that one.
            self.watch.refresh_to(path, current);
            if !pending.last_look {
                pending.deadline = pending.hold_until.max(now);
                self.requeue(path, pending);
            } else {
                tracing::debug!(path, "file event without a change; dropped");
            }
            return None;
        }
        if pending.changes.contains(&FileChange::Create)
            && !pending.last_look
            && baseline.is_empty()
            && now < pending.hold_until
        {
            // A new file is judged whole: its writer may close and go on
            // writing (a shell's `>`), so it is looked at when the writer
            // exits, or after the hold.
            pending.deadline = pending.hold_until;
            self.requeue(path, pending);
            return None;
        }
        let mut accepted = None;
        if !pending.writers.authorised.is_empty() && self.baselines.is_some() && !pending.last_look
        {
            // A deploy may close and go on writing (a shell's `>` closes the
            // descriptor it opened, then writes): what becomes the baseline
            // is what the writer leaves when it exits, or at DEPLOY_HOLD.
            let limit = pending.since + DEPLOY_HOLD;
            if now < limit {
                pending.deadline = limit;
                pending.hold_until = pending.hold_until.max(limit);
                self.requeue(path, pending);
                return None;
            }
        }
        if !pending.writers.authorised.is_empty() && self.baselines.is_some() {
            let authorised = pending.writers.authorised.clone();
            match self.accept(path, &authorised, &pending.record.process) {
                Outcome::Accepted(a) => accepted = Some(Box::new(a)),
                Outcome::Busy if !pending.last_look => {
                    pending.deadline = now + HOLD / 10;
                    self.requeue(path, pending);
                    return None;
                }
                Outcome::Busy => tracing::warn!(
                    path,
                    "an authorised change could not be read whole (still changing, or too large to keep); handled as any change"
                ),
            }
        }
        let (baseline, after) = match &accepted {
            Some(_) => {
                let current = fsio::state(file).ok().flatten();
                let baseline = self
                    .baselines
                    .as_ref()
                    .map(|store| snapshots(store, path))
                    .unwrap_or_default();
                (baseline, after_state(file, current.as_ref(), true))
            }
            None => (baseline, after),
        };
        if accepted.is_none() {
            self.recent.record(path, seen, now);
            self.watch.refresh_to(path, current.clone());
        } else {
            self.watch.refresh(path);
        }
        let mut record = pending.record;
        let mut change = strongest(&pending.changes);
        if accepted.is_some() {
            pending.changes.push(FileChange::Accepted);
            change = FileChange::Accepted;
        }
        let key = current.map(|s| s.key).unwrap_or_default();
        if let Body::File(raw) = &mut record.body {
            raw.path = Some(path.to_string());
            raw.change = Some(change);
            raw.changes = pending.changes;
            raw.killed = pending.killed;
            raw.baseline = baseline;
            raw.after = after;
            raw.accepted = accepted;
            raw.found = found.map(str::to_string);
            if key.ino != 0 {
                raw.dev = key.dev;
                raw.ino = key.ino;
            }
        }
        Some(record)
    }
}
