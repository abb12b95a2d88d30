//! Baselines: the recorded good state of each file a `revert` policy
//! covers, in a content-addressed store under the state directory that
//! survives restarts (`baselines/objects/<sha256>`, and one index per
//! policy in `baselines/policies/<policy>.json`). Each file keeps its
//! current baseline and a bounded number of predecessors (`history`).
//!
//! The agent and `reflex baseline` both write the store: every change is
//! made under `baselines/lock` on a fresh read of the indexes, and the agent
//! reads them again whenever the index directory changed, so a rollback or
//! an update made by the command is in force at the agent's next look.
use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use super::store::{BaselineStore, NewVersion};
use crate::{
    events::file::Snapshot,
    fsio::{self, FsError},
};

use super::history::How;

/// Largest file a baseline is kept for.
pub const MAX_BASELINE_BYTES: u64 = 64 << 20;

/// Predecessors kept per file unless the settings say otherwise.
pub const DEFAULT_HISTORY: usize = 10;

/// `baselines:` in the agent's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselinesConfig {
    /// Earlier versions kept per file (default 10).
    pub history: Option<usize>,
}

impl BaselinesConfig {
    /// The bound in force.
    pub fn history(&self) -> usize {
        self.history.unwrap_or(DEFAULT_HISTORY)
    }
}

/// One recorded state of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// SHA-256 of the content (the object's name).
    pub sha256: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// When it was recorded (RFC 3339).
    pub recorded: String,
    /// Golden file the content came from, if not the file itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Version number of the file's baseline, from 1, never reused.
    #[serde(default = "first_version")]
    pub version: u64,
    /// How this version came to be.
    #[serde(default)]
    pub how: How,
    /// Who made it, when known (the writer an `accept_from` authorised, the
    /// version a rollback went back to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

fn first_version() -> u64 {
    1
}

impl Baseline {
    /// The recorded state as events carry it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sha256: Some(self.sha256.clone()),
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
        }
    }

    /// Whether `path` is as recorded: a regular file with the same content,
    /// mode, owner and group.
    pub fn matches(&self, path: &Path) -> Result<bool, FsError> {
        fsio::has_state(path, &self.sha256, self.size, self.ownership())
    }

    /// Mode and owner, as a restore sets them.
    pub fn ownership(&self) -> fsio::Ownership {
        fsio::Ownership {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// Where the content with `sha256` is kept in the store under `state_dir`.
pub fn object_path(state_dir: &Path, sha256: &str) -> PathBuf {
    state_dir.join("baselines").join("objects").join(sha256)
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// A store file could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// An index file is not valid JSON.
    #[error("baseline index {path} is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The watched file could not be read.
    #[error(transparent)]
    File(#[from] FsError),
    /// The policy keeps no baseline of the path.
    #[error("policy {policy} has no baseline of {path}")]
    Missing {
        /// The policy.
        policy: String,
        /// The path.
        path: String,
    },
    /// No version of the file's baseline is named so.
    #[error("no version {wanted:?} of the baseline of {path} (see `reflex baseline history`)")]
    NoVersion {
        /// The path.
        path: String,
        /// What was asked for.
        wanted: String,
    },
}

/// Maps an I/O error to [`BaselineError::Io`] about `path`.
pub(super) fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BaselineError {
    let path = path.to_owned();
    move |source| BaselineError::Io { what, path, source }
}
