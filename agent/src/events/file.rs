//! File events: what the kernel reported, and the path the agent resolved.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use reflex_wire::file::{change, flag};

/// What happened to a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChange {
    /// Opened for writing.
    Write,
    /// Closed after writing.
    CloseWrite,
    /// Truncated.
    Truncate,
    /// Renamed from or onto.
    Rename,
    /// Removed.
    Unlink,
    /// Mode changed.
    Chmod,
    /// Owner changed.
    Chown,
    /// A link to or at it was made.
    Link,
    /// Created (a new file in a watched directory).
    Create,
    /// Found different from its baseline while the agent was not running.
    Drift,
    /// Attributes changed (mode, owner, extended attributes, link count or
    /// times), as fanotify reports it without saying which.
    Attrib,
    /// Made by an authorised writer (`accept_from`) or found at start-up
    /// under `on_drift: accept`: the change became the baseline.
    Accepted,
}

impl FileChange {
    /// From the wire value; `None` for an unknown one.
    pub fn from_wire(value: u32) -> Option<Self> {
        Some(match value {
            change::WRITE => Self::Write,
            change::CLOSE_WRITE => Self::CloseWrite,
            change::TRUNCATE => Self::Truncate,
            change::RENAME => Self::Rename,
            change::UNLINK => Self::Unlink,
            change::CHMOD => Self::Chmod,
            change::CHOWN => Self::Chown,
            change::LINK => Self::Link,
            _ => return None,
        })
    }

    /// The change's name in policies and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::CloseWrite => "close_write",
            Self::Truncate => "truncate",
            Self::Rename => "rename",
            Self::Unlink => "unlink",
            Self::Chmod => "chmod",
            Self::Chown => "chown",
            Self::Link => "link",
            Self::Create => "create",
            Self::Attrib => "attrib",
            Self::Drift => "drift",
            Self::Accepted => "accepted",
        }
    }
}

/// A file event. The kernel fills identity and raw arguments; the agent
/// fills `path` (and may merge several raw events into one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    /// The watched file, once resolved.
    pub path: Option<String>,
    /// What happened (the most telling of the merged changes).
    pub change: Option<FileChange>,
    /// Every change merged into this event, in order of arrival.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FileChange>,
    /// Device of the file (`major << 20 | minor`), when known.
    pub dev: u32,
    /// Inode, when known.
    pub ino: u64,
    /// Device of its directory, for opens.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub dir_dev: u32,
    /// Inode of its directory, for opens.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub dir_ino: u64,
    /// Dentry name of an opened file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Path argument as the caller spelled it (path-based calls).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arg_path: String,
    /// Second path argument (rename and link).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arg_path2: String,
    /// Descriptor, for opens, closes and fd-based calls.
    pub fd: i32,
    /// `open` flags.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub open_flags: u32,
    /// How the kernel matched it.
    pub matched_by: MatchedBy,
    /// Whether the probe killed the task in the syscall.
    pub killed: bool,
    /// The recorded good state of the file, per `revert` policy covering
    /// it (filled in when the change is settled).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub baseline: BTreeMap<String, Snapshot>,
    /// The file's state once the change settled; absent when no regular
    /// file is left at the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Snapshot>,
    /// Set when the change became the baseline of some policies (`baseline`
    /// then holds the new one for them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Box<Accepted>>,
    /// Why the file could not be looked at (its filesystem did not answer
    /// in time): the change is reported without being verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unverified: Option<String>,
    /// What is at the path instead of a regular file (`fifo`, `socket`,
    /// `directory`, `symlink`, `char_device`, `block_device`): never
    /// opened, only reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
}

/// A change that became the baseline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// Policies whose baseline it became; their `revert` leaves it.
    pub policies: Vec<String>,
    /// Content hash of the baseline it replaced, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Content hash of the new baseline; absent when the writer removed
    /// the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// What made the writer authorised: itself or one of its ancestors
    /// (the event's `process` is the writer). Absent for `on_drift: accept`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<AcceptedBy>,
}

/// The process image an `accept_from` matched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedBy {
    /// Its process id.
    pub pid: u32,
    /// The path that matched (its executable or the file it exec'd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A file's content and attributes at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// SHA-256 of the content, when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the extended attributes' canonical encoding
    /// (`fsio::xattr`), when they were read; in a baseline, absent when
    /// they were not recorded (then they are neither compared nor put back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattrs_sha256: Option<String>,
}

impl Snapshot {
    /// Whether a file found as `self` is as `baseline` records it: content,
    /// mode, owner, group and size, and the extended attributes when the
    /// baseline recorded them.
    pub fn agrees_with(&self, baseline: &Snapshot) -> bool {
        (&self.sha256, self.mode, self.uid, self.gid, self.size)
            == (
                &baseline.sha256,
                baseline.mode,
                baseline.uid,
                baseline.gid,
                baseline.size,
            )
            && baseline
                .xattrs_sha256
                .as_ref()
                .is_none_or(|want| self.xattrs_sha256.as_ref() == Some(want))
    }
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// How the kernel matched a file event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// Device and inode of a watched file.
    #[default]
    Inode,
    /// Device and inode of a watched directory.
    Dir,
    /// Hash of the last path component (verified by the agent).
    Name,
    /// A fanotify mark on the watched file: a change made by any path into
    /// the kernel (io_uring, a held descriptor, a shared mapping, a call
    /// through another name).
    Fanotify,
}

impl MatchedBy {
    /// From the wire flag bits.
    pub fn from_flags(flags: u32) -> Self {
        if flags & flag::BY_INODE != 0 {
            Self::Inode
        } else if flags & flag::BY_DIR != 0 {
            Self::Dir
        } else {
            Self::Name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_compared_only_when_the_baseline_recorded_them() {
        let old = Snapshot {
            sha256: Some("ab".into()),
            mode: 0o644,
            size: 2,
            ..Snapshot::default()
        };
        let now = Snapshot {
            xattrs_sha256: Some("x1".into()),
            ..old.clone()
        };
        assert!(now.agrees_with(&old), "no attributes recorded");
        let recorded = Snapshot {
            xattrs_sha256: Some("x0".into()),
            ..old.clone()
        };
        assert!(!now.agrees_with(&recorded));
        assert!(
            !old.agrees_with(&recorded),
            "attributes unread: not known equal"
        );
        assert!(recorded.agrees_with(&recorded));
        let chmodded = Snapshot {
            mode: 0o666,
            ..recorded.clone()
        };
        assert!(!chmodded.agrees_with(&recorded));
    }
}
