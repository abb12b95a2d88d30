//! The enriched event the agent emits: the decoded event plus wall time and
//! the process context from the process table.
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Body, Kind};

/// One event as `reflex events` prints it and as policies see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Wall-clock time of the event, RFC 3339 with nanoseconds.
    pub time: String,
    /// Kernel boot-time stamp in nanoseconds.
    pub ktime_ns: u64,
    /// Event kind.
    pub kind: Kind,
    /// The process the event is about, with what the agent knows of it.
    pub process: ProcessContext,
    /// Family-specific data, under the kind's name (`"exec": {...}`).
    #[serde(flatten)]
    pub body: Body,
}

/// Who did it: the kernel's view of the task plus the process table's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessContext {
    /// Process id.
    pub pid: u32,
    /// Thread id that triggered the event.
    pub tid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Command name.
    pub comm: String,
    /// Set when `exe` names another file in the agent's view than the one
    /// the kernel loaded (a path inside another mount namespace): policies'
    /// `exe` conditions do not match it (the exec family's paths still do).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exe_foreign: bool,
    /// Path of the executable the process runs (as the kernel loaded it,
    /// whatever name it was started by), when known.
    pub exe: Option<String>,
    /// Identity of that executable, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_id: Option<FileId>,
    /// Arguments, when known, at most 1 KiB of them.
    pub argv: Vec<String>,
    /// Whether `argv` was cut at 1 KiB (from an exec event or from `/proc`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Where it runs: `cgroup` (path), `unit`, `user_unit`, `container`
    /// (resolved from `cgroup_id`; absent when the cgroup could not be).
    #[serde(flatten, default)]
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// Login user id (`loginuid`, set by `pam_loginuid` at login and kept
    /// by everything the session starts), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_uid: Option<u32>,
    /// Audit session id, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u32>,
    /// Boot-time nanoseconds when the process started (or exec'd), when known.
    pub start_ktime_ns: Option<u64>,
    /// The parent, when known.
    pub parent: Option<ParentContext>,
    /// The process's own image as its lineage knows it: the executable the
    /// kernel resolved (for a script, its interpreter) and the file it
    /// exec'd (the script). Absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Arc<Ancestor>>,
    /// Where the process comes from, nearest first: the image it had before
    /// its last exec (when it exec'd more than once), its parent, the
    /// parent's parent, and so on, as the process table saw them at fork
    /// and exec (a reparented process keeps its origin). Bounded by
    /// `process.ancestry_depth`.
    #[serde(default, skip_serializing_if = "no_ancestors")]
    pub ancestors: Arc<[Ancestor]>,
}

fn no_ancestors(ancestors: &Arc<[Ancestor]>) -> bool {
    ancestors.is_empty()
}

/// One process image in a chain of ancestry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    /// Process id.
    pub pid: u32,
    /// Boot-time nanoseconds of its start (fork) or exec, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ktime_ns: Option<u64>,
    /// Executable as the kernel resolved it (`/proc/PID/exe`): for a
    /// script, its interpreter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The file that was exec'd, made absolute: for a script, the script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

impl Ancestor {
    /// The image's paths worth matching: its executable and, when it
    /// differs, the file that was exec'd.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        let filename = self
            .filename
            .as_deref()
            .filter(|f| Some(*f) != self.exe.as_deref());
        self.exe.as_deref().into_iter().chain(filename)
    }
}

/// Identity of a file: its device (`major << 20 | minor`, as the kernel
/// keeps it) and inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    /// Device.
    pub dev: u32,
    /// Inode.
    pub ino: u64,
}

/// What the agent knows of a parent process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentContext {
    /// Process id.
    pub pid: u32,
    /// Executable path, when known.
    pub exe: Option<String>,
    /// Set when `exe` names another file in the agent's view than the one
    /// the kernel loaded (a path inside another mount namespace): it is
    /// shown, but `parent_exe` conditions do not match it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exe_foreign: bool,
    /// Command name, when known.
    pub comm: Option<String>,
}
