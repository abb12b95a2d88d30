//! Baselines: the recorded good state of each file a `revert` policy
//! covers, in a content-addressed store under the state directory that
//! survives restarts (`baselines/objects/<sha256>`, and one index per
//! policy in `baselines/policies/<policy>.json`). Each file keeps its
//! current baseline and a bounded number of predecessors (`history`).
//!
//! A baseline holds the file's extended attributes too, as one more object
//! (their canonical encoding, named by its SHA-256, `xattrs_sha256` in the
//! index), up to `baselines.max_xattr_bytes`. A baseline without them (one
//! written before they were recorded, or whose attributes were refused) does
//! not compare them and a restore from it leaves the new file's own: the
//! behaviour it was recorded under, so an upgrade reverts nothing it did not
//! revert before. The next recording of the file (an accepted change,
//! `reflex baseline update`) adds them.
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
    fsio::{self, FsError, xattr::Xattrs},
};

use super::history::How;

/// Largest file a baseline is kept for.
pub const MAX_BASELINE_BYTES: u64 = 64 << 20;

/// Predecessors kept per file unless the settings say otherwise.
pub const DEFAULT_HISTORY: usize = 10;

/// Bytes of extended attributes (names and values) kept per file version
/// unless the settings say otherwise: an ACL, a capability and a label take
/// a few hundred.
pub const DEFAULT_MAX_XATTR_BYTES: u64 = 64 << 10;

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
    /// SHA-256 of the extended attributes' encoding (also an object's
    /// name); absent when they were not recorded, and then not compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattrs_sha256: Option<String>,
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
            xattrs_sha256: self.xattrs_sha256.clone(),
        }
    }

    /// Whether `path` is as recorded: a regular file with the same content,
    /// mode, owner and group, and extended attributes when they were
    /// recorded.
    pub fn matches(&self, path: &Path) -> Result<bool, FsError> {
        fsio::has_state(
            path,
            &self.sha256,
            self.size,
            self.ownership(),
            self.xattrs_sha256.as_deref(),
        )
    }

    /// The objects this version needs: its content, and its attributes.
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.sha256.as_str()).chain(self.xattrs_sha256.as_deref())
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

/// The extended attributes kept under `state_dir` with digest `sha256`.
pub fn load_xattrs(state_dir: &Path, sha256: &str) -> Result<Xattrs, BaselineError> {
    let path = object_path(state_dir, sha256);
    let bytes = std::fs::read(&path).map_err(io_error("reading", &path))?;
    let xattrs = Xattrs::decode(&bytes).map_err(|source| BaselineError::BadXattrs {
        path: path.clone(),
        source,
    })?;
    if xattrs.digest() != sha256 {
        return Err(BaselineError::BadXattrs {
            path,
            source: fsio::xattr::XattrDecodeError::Digest,
        });
    }
    Ok(xattrs)
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
    /// A kept set of extended attributes does not read back.
    #[error("baseline attributes {path} are corrupt")]
    BadXattrs {
        /// The object.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: fsio::xattr::XattrDecodeError,
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
