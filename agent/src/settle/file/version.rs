//! What accepting a change reads of the file: its content exactly as
//! hashed, its state and extended attributes, and the file as it is left.
//! Read on the filesystem pool with the change's last look, so a file whose
//! filesystem hangs costs the settler nothing but that file; the baseline is
//! then written in the settler (`accept`), before any later change of the
//! file is judged: that change waits behind the look in flight.
use std::path::Path;

use super::{accept::read_version, record::after_state, store::XattrReader};
use crate::{
    events::{clock::BootClock, file::Snapshot},
    fsio::{self, FileState, xattr::Xattrs},
};

/// A file read whole for its acceptance.
#[derive(Debug)]
pub struct Version {
    /// The content, exactly as hashed.
    pub(super) content: Vec<u8>,
    /// Its SHA-256.
    pub(super) sha256: String,
    /// Its state during the read.
    pub(super) state: FileState,
    /// Its extended attributes, when they can be kept.
    pub(super) xattrs: Option<Xattrs>,
    /// Its state just after, as the watch list follows it.
    pub(super) current: Option<FileState>,
    /// The same as events carry it, hashed.
    pub(super) after: Option<Snapshot>,
}

/// What a look read for an acceptance.
#[derive(Debug)]
pub enum Acceptance {
    /// Nothing: the change was not due for acceptance when the look left.
    NotRead,
    /// The file changed during the read, or cannot be kept.
    Busy,
    /// No file is there; `read_ktime_ns` is when that was seen.
    Gone {
        /// Boot time of the look.
        read_ktime_ns: u64,
    },
    /// Read whole at `read_ktime_ns`.
    Read {
        /// Boot time of the read the baseline is taken from.
        read_ktime_ns: u64,
        /// What was read.
        version: Box<Version>,
    },
}

impl Acceptance {
    /// Reads `path` for its acceptance (on the pool, or inline without one).
    pub fn read(path: &Path, xattrs: &XattrReader) -> Self {
        let read_ktime_ns = BootClock::now_ns();
        if !path.exists() {
            return Self::Gone { read_ktime_ns };
        }
        let Some((content, sha256, state)) = read_version(path) else {
            return Self::Busy;
        };
        let xattrs = xattrs.read(path);
        let current = fsio::state(path).ok().flatten();
        let after = after_state(path, current.as_ref(), true);
        Self::Read {
            read_ktime_ns,
            version: Box::new(Version {
                content,
                sha256,
                state,
                xattrs,
                current,
                after,
            }),
        }
    }
}
