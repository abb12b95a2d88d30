//! Changes settled a moment ago, so that fanotify's later notice of the
//! same change is not reported (and reverted) a second time.
use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime},
};

use crate::{events::file::Snapshot, fsio::FileState};

/// How long a settled change is remembered: longer than a revert takes,
/// short enough that a later write of the same bytes is its own change.
const REMEMBER: Duration = Duration::from_secs(2);
/// Paths remembered before old entries are pruned.
const PRUNE_AT: usize = 4096;

/// What a settle saw of a file: enough to tell the same change from a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub(super) state: Option<FileState>,
    pub(super) after: Option<Snapshot>,
    pub(super) modified: Option<SystemTime>,
}

/// Recently settled changes per path.
#[derive(Default)]
pub struct Recent {
    seen: HashMap<String, (Seen, Instant)>,
}

impl Recent {
    /// Remembers that a change of `path` leaving it as `seen` was reported.
    pub fn record(&mut self, path: &str, seen: Seen, now: Instant) {
        if self.seen.len() >= PRUNE_AT {
            self.seen
                .retain(|_, (_, at)| now.duration_since(*at) < REMEMBER);
        }
        self.seen.insert(path.to_string(), (seen, now));
    }

    /// Forgets `path`: it was put back, so what a change leaves next is new.
    pub fn forget(&mut self, path: &str) {
        self.seen.remove(path);
    }

    /// Whether `path` as `seen` is what a change reported a moment ago left.
    pub fn repeats(&self, path: &str, seen: &Seen, now: Instant) -> bool {
        self.seen
            .get(path)
            .is_some_and(|(s, at)| s == seen && now.duration_since(*at) < REMEMBER)
    }
}
