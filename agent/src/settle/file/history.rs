//! The versions of one file's baseline: the current one and its
//! predecessors, newest last, bounded; and choosing a version by number or
//! by a prefix of its content hash.
use serde::{Deserialize, Serialize};

use super::baseline::Baseline;

/// How a baseline version came to be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// Recorded when its policy first loaded.
    #[default]
    Recorded,
    /// Accepted by `reflex baseline update`.
    Updated,
    /// Written by a writer `accept_from` authorised.
    Accepted,
    /// Found at start-up under `on_drift: accept`.
    Drift,
    /// Chosen again by `reflex baseline rollback`.
    Rollback,
    /// Put back because an unauthorised write raced an acceptance.
    Withdrawn,
}

impl How {
    /// The name as shown and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            How::Recorded => "recorded",
            How::Updated => "updated",
            How::Accepted => "accepted",
            How::Drift => "drift",
            How::Rollback => "rollback",
            How::Withdrawn => "withdrawn",
        }
    }
}

/// One file's baseline in a policy's index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The baseline in force.
    #[serde(flatten)]
    pub current: Baseline,
    /// Earlier versions, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Baseline>,
}

impl Entry {
    /// A file's first baseline.
    pub fn new(current: Baseline) -> Self {
        Self {
            current,
            history: Vec::new(),
        }
    }

    /// The number the next version gets.
    pub fn next_version(&self) -> u64 {
        self.versions().iter().map(|b| b.version).max().unwrap_or(0) + 1
    }

    /// Makes `baseline` current; the replaced one joins the history, which
    /// keeps at most `keep` versions. Returns the versions dropped.
    pub fn push(&mut self, baseline: Baseline, keep: usize) -> Vec<Baseline> {
        let previous = std::mem::replace(&mut self.current, baseline);
        self.history.push(previous);
        let excess = self.history.len().saturating_sub(keep);
        self.history.drain(..excess).collect()
    }

    /// Every version, the current first, then newest to oldest.
    pub fn versions(&self) -> Vec<&Baseline> {
        std::iter::once(&self.current)
            .chain(self.history.iter().rev())
            .collect()
    }
}

/// The version `wanted` names among `versions`: its number (`3` or `v3`),
/// or a prefix of at least 6 hex digits of its sha256 (the newest such).
pub fn select<'a>(versions: &[&'a Baseline], wanted: &str) -> Option<&'a Baseline> {
    let wanted = wanted.trim();
    let number = wanted.strip_prefix('v').unwrap_or(wanted);
    if let Ok(n) = number.parse::<u64>() {
        return versions.iter().find(|b| b.version == n).copied();
    }
    if wanted.len() >= 6 && wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
        let wanted = wanted.to_ascii_lowercase();
        return versions
            .iter()
            .find(|b| b.sha256.starts_with(&wanted))
            .copied();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: u64, sha: &str) -> Baseline {
        Baseline {
            sha256: sha.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            xattrs_sha256: None,
            recorded: String::new(),
            source: None,
            version: n,
            how: How::Recorded,
            by: None,
        }
    }

    #[test]
    fn pushes_keep_the_newest_and_number_on() {
        let mut entry = Entry::new(version(1, "aa11"));
        for n in 2..=5 {
            let next = entry.next_version();
            assert_eq!(next, n);
            let dropped = entry.push(version(next, &format!("bb{n}")), 2);
            assert_eq!(
                dropped.len(),
                usize::from(n >= 4),
                "one out per one in past the bound"
            );
        }
        let numbers: Vec<u64> = entry.versions().iter().map(|b| b.version).collect();
        assert_eq!(numbers, [5, 4, 3]);
    }

    #[test]
    fn select_by_number_or_hash_prefix() {
        let a = version(1, "abcdef0123");
        let b = version(2, "abcdef9999");
        let versions = [&b, &a];
        assert_eq!(select(&versions, "v1").map(|b| b.version), Some(1));
        assert_eq!(select(&versions, "2").map(|b| b.version), Some(2));
        assert_eq!(select(&versions, "abcdef0").map(|b| b.version), Some(1));
        assert_eq!(select(&versions, "ABCDEF").map(|b| b.version), Some(2));
        assert!(select(&versions, "abc").is_none(), "too short to be safe");
        assert!(select(&versions, "7").is_none());
    }
}
