//! The kill fuse: a kill policy that hits too many different executables in
//! a minute is probably too broad; it stops killing until the next reload.
//! Executables are told apart by identity (device and inode), so one file
//! started by many names counts once.
use std::collections::{HashMap, HashSet};

use crate::events::FileId;

/// An executable as the fuse counts it: by identity when the kernel or
/// `/proc` gave one, by path otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Executable {
    /// Device and inode.
    Id(FileId),
    /// Path (or command name) when the identity is unknown.
    Path(String),
}

/// Window over which distinct executables are counted.
const WINDOW_NS: u64 = 60_000_000_000;

/// Per policy, the executables it killed in the last minute (each with
/// its last kill), and the policies whose fuse blew. A policy holds at
/// most `limit + 1` executables: one past the limit blows its fuse, and a
/// blown policy records nothing more; killing one executable again and
/// again costs a lookup, not a pass over every kill.
#[derive(Debug)]
pub struct KillFuse {
    limit: usize,
    recent: HashMap<String, HashMap<Executable, u64>>,
    blown: HashSet<String>,
}

impl KillFuse {
    /// A fuse that blows past `limit` distinct executables a minute.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            recent: HashMap::new(),
            blown: HashSet::new(),
        }
    }

    /// Whether `policy` may still kill.
    pub fn is_blown(&self, policy: &str) -> bool {
        self.blown.contains(policy)
    }

    /// Records a kill of `exe` by `policy` at `now_ns`; returns the number of
    /// distinct executables when this kill blows the fuse.
    pub fn record(&mut self, policy: &str, exe: Executable, now_ns: u64) -> Option<usize> {
        if self.blown.contains(policy) {
            return None;
        }
        let recent = self.recent.entry(policy.to_string()).or_default();
        recent.insert(exe, now_ns);
        if recent.len() > self.limit {
            recent.retain(|_, t| now_ns.saturating_sub(*t) <= WINDOW_NS);
        }
        if recent.len() > self.limit {
            let distinct = recent.len();
            self.recent.remove(policy);
            self.blown.insert(policy.to_string());
            return Some(distinct);
        }
        None
    }

    /// Executables remembered now, over every policy.
    pub fn entries(&self) -> usize {
        self.recent.values().map(HashMap::len).sum()
    }

    /// Forgets everything (a reload re-arms every fuse).
    pub fn reset(&mut self) {
        self.recent.clear();
        self.blown.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Executable {
        Executable::Path(p.to_string())
    }

    fn id(ino: u64) -> Executable {
        Executable::Id(FileId { dev: 1, ino })
    }

    #[test]
    fn blows_past_the_limit_of_distinct_executables() {
        let mut fuse = KillFuse::new(2);
        assert_eq!(fuse.record("p", path("/a"), 0), None);
        assert_eq!(fuse.record("p", path("/a"), 1), None, "same exe again");
        assert_eq!(fuse.record("p", path("/b"), 2), None);
        assert_eq!(fuse.record("p", path("/c"), 3), Some(3));
        assert!(fuse.is_blown("p"));
        assert!(!fuse.is_blown("q"));
        fuse.reset();
        assert!(!fuse.is_blown("p"));
    }

    #[test]
    fn old_kills_leave_the_window() {
        let mut fuse = KillFuse::new(1);
        fuse.record("p", path("/a"), 0);
        assert_eq!(fuse.record("p", path("/b"), WINDOW_NS + 1), None);
    }

    #[test]
    fn one_executable_killed_again_and_again_holds_one_entry() {
        let mut fuse = KillFuse::new(2);
        for t in 0..100_000 {
            assert_eq!(fuse.record("p", path("/a"), t), None);
        }
        assert_eq!(fuse.recent["p"].len(), 1);
        assert_eq!(fuse.entries(), 1);
    }

    #[test]
    fn a_policy_holds_at_most_limit_plus_one_executables() {
        let mut fuse = KillFuse::new(3);
        let mut most = 0;
        for ino in 0..5_000 {
            fuse.record("p", id(ino), ino);
            most = most.max(fuse.entries());
        }
        assert_eq!(most, 3, "the fourth blows the fuse and is forgotten");
        assert_eq!(fuse.entries(), 0, "a blown policy records nothing");
    }

    #[test]
    fn one_file_under_many_names_counts_once() {
        let mut fuse = KillFuse::new(1);
        for t in 0..5 {
            assert_eq!(fuse.record("p", id(7), t), None);
        }
        assert_eq!(fuse.record("p", id(8), 9), Some(2));
    }
}
