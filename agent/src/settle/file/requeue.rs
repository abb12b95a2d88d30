//! Putting a change back to wait when a look did not settle it. Its look
//! ran on the pool while later events of the same file came in and were
//! held on their own: they belong to the same change, so they are taken
//! into it rather than overwritten, and a deploy's look that such events
//! made stale is taken again.
use std::time::Instant;

use super::{DEPLOY_HOLD, FileSettler, Pending};

impl Pending {
    /// Takes `later`, the events of the same file that came after this
    /// change's look went out, into this change.
    pub(super) fn absorb(&mut self, later: Pending) {
        if self.placeholder {
            // A look again after a revert: the real change replaces it.
            *self = later;
            return;
        }
        if self.by_fanotify_only && !later.by_fanotify_only {
            // The probes' record says more: it speaks for the change.
            self.record = later.record;
            self.writer = later.writer;
        }
        self.changes.extend(later.changes);
        self.deadline = self.deadline.min(later.deadline);
        self.hold_until = self.hold_until.max(later.hold_until);
        self.last_look |= later.last_look;
        self.killed |= later.killed;
        self.by_name_only &= later.by_name_only;
        self.by_fanotify_only &= later.by_fanotify_only;
        self.attrib_only &= later.attrib_only;
        self.writers.merge(later.writers);
    }
}

impl FileSettler {
    /// Holds `pending` for `path` again, with whatever arrived for the
    /// path while its look was out.
    pub(super) fn requeue(&mut self, path: &str, mut pending: Pending) {
        if let Some(later) = self.pending.remove(path) {
            pending.absorb(later);
        }
        self.pending.insert(path.to_string(), pending);
    }

    /// An authorised deploy's change whose writer did more while its look
    /// was out: the look may predate that, so the change is looked at again
    /// with it rather than taken as the baseline now, within DEPLOY_HOLD.
    /// Returns the change when it is to be settled with the look it has.
    pub(super) fn relook_deploy(
        &mut self,
        path: &str,
        pending: Pending,
        now: Instant,
    ) -> Option<Pending> {
        let stale = self
            .pending
            .get(path)
            .is_some_and(|later| pending.writers.same_authorised_writer(&later.writers));
        if !stale || now >= pending.since + DEPLOY_HOLD {
            return Some(pending);
        }
        let mut pending = pending;
        pending.deadline = now;
        self.requeue(path, pending);
        None
    }
}
