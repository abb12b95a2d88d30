//! Settling one change: what a look at the file found (its state, its
//! content hash where there is a baseline) against the baseline and what
//! was last seen, into the record policies judge. The look itself runs on
//! the filesystem pool ([`super::look`]) when the settler has one.
use std::{path::Path, time::Instant};

use super::{
    DEPLOY_HOLD, FileSettler, HOLD, Pending,
    accept::raced_policies,
    look::Look,
    recent::Seen,
    record::{snapshots, strongest},
    store::XattrReader,
    version::Acceptance,
};
use crate::events::{Body, Record, file::FileChange};

impl FileSettler {
    /// Verifies a change against the file and builds its record; an
    /// unchanged file is looked at again later unless this was the last look.
    pub(super) fn settle(&mut self, path: &str, pending: Pending, now: Instant) -> Option<Record> {
        let hash = self.wants_hash(path);
        let reader = self.acceptance_reader(&pending, now);
        let look = Look::take(Path::new(path), hash, reader.as_ref());
        self.settle_with(path, pending, look, now)
    }

    /// What a look at `pending`'s file reads for its acceptance, when the
    /// change is due to be accepted if its content holds (the last look at
    /// an authorised change, or its deploy hold run out).
    pub(super) fn acceptance_reader(&self, pending: &Pending, now: Instant) -> Option<XattrReader> {
        let due = pending.last_look || now >= pending.since + DEPLOY_HOLD;
        let store = self.baselines.as_ref()?;
        (due && !pending.writers.authorised.is_empty()).then(|| store.xattr_reader())
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
        let Look {
            current,
            after,
            modified,
            found,
            acceptance,
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
        let mut read = None;
        if !pending.writers.authorised.is_empty() && self.baselines.is_some() {
            let authorised = pending.writers.authorised.clone();
            let writer = &pending.record.process;
            match acceptance {
                // Due since the look left: read it with the next look.
                Acceptance::NotRead => {
                    pending.deadline = now;
                    self.requeue(path, pending);
                    return None;
                }
                Acceptance::Busy if !pending.last_look => {
                    pending.deadline = now + HOLD / 10;
                    self.requeue(path, pending);
                    return None;
                }
                Acceptance::Busy => tracing::warn!(
                    path,
                    "an authorised change could not be read whole (still changing, or too large to keep); handled as any change"
                ),
                Acceptance::Gone { read_ktime_ns } => {
                    let a = self.accept(path, &authorised, writer, read_ktime_ns, None);
                    accepted = Some(Box::new(a));
                }
                Acceptance::Read {
                    read_ktime_ns,
                    version,
                } => {
                    let a = self.accept(path, &authorised, writer, read_ktime_ns, Some(&version));
                    accepted = Some(Box::new(a));
                    read = Some(version);
                }
            }
            // A change that arrived while the read was on the pool may
            // have been made before it (inside the accepted content): its
            // writer must answer for it as if it came after the acceptance.
            if accepted.is_some()
                && let Some(later) = self.pending.get_mut(path)
            {
                let raced =
                    raced_policies(&self.marks, path, later.record.ktime_ns, &later.writers);
                later.writers.raced.extend(raced);
            }
        }
        let (baseline, after, now_there) = match &accepted {
            Some(_) => {
                let baseline = self
                    .baselines
                    .as_ref()
                    .map(|store| snapshots(store, path))
                    .unwrap_or_default();
                let (current, after) = read.map_or((None, None), |v| (v.current, v.after));
                (baseline, after, current)
            }
            None => (baseline, after, current.clone()),
        };
        if accepted.is_none() {
            self.recent.record(path, seen, now);
        }
        self.watch.refresh_to(path, now_there);
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
