//! Typed events: what the decoder makes of a ring buffer record, and the
//! enriched [`Record`] the agent emits, one JSON object per event.
pub mod clock;
pub mod connect;
pub mod cpu;
pub mod decode;
pub mod file;
pub mod reader;
pub mod record;

use serde::{Deserialize, Serialize};

pub use decode::{DecodeError, decode};
pub use record::{Ancestor, FileId, ParentContext, ProcessContext, Record};

/// The kind of an event, by its stable, user-facing name (CLI, JSON,
/// policies). Each kind belongs to one family, the word after `on:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Kind {
    /// A process executed a new image.
    Exec,
    /// A process exited.
    Exit,
    /// A process started a new process. Kept by the process table for
    /// lineage; emitted only when asked for by name (`--kind fork`).
    Fork,
    /// A watched file changed.
    File,
    /// A connection was made, accepted, or a socket started listening.
    Connect,
    /// A CPU threshold held for its duration.
    #[value(alias = "cpu-high")]
    CpuHigh,
    /// A CPU threshold released after `cpu_high`.
    #[value(alias = "cpu-normal")]
    CpuNormal,
}

impl Kind {
    /// The family the kind belongs to, as policies name it after `on:` (and
    /// metrics in their `family` label): exits belong to `exec`, the family
    /// of process lifecycles.
    pub fn family(self) -> &'static str {
        match self {
            Kind::Exec | Kind::Exit | Kind::Fork => "exec",
            Kind::File => "file",
            Kind::CpuHigh | Kind::CpuNormal => "cpu",
            Kind::Connect => "connect",
        }
    }

    /// The kind's name as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Exit => "exit",
            Kind::Fork => "fork",
            Kind::File => "file",
            Kind::Connect => "connect",
            Kind::CpuHigh => "cpu_high",
            Kind::CpuNormal => "cpu_normal",
        }
    }
}

/// The task that triggered an event, as the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Command name (at most 15 bytes).
    pub comm: String,
    /// cgroup v2 id.
    pub cgroup_id: u64,
}

/// One decoded event: when, who, and what.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Kernel `CLOCK_BOOTTIME` nanoseconds when the probe ran.
    pub ktime_ns: u64,
    /// The task that triggered it.
    pub task: Task,
    /// The family-specific part.
    pub body: Body,
}

impl Event {
    /// The kind of this event.
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }
}

/// Family-specific event data; serialised under the kind's name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// A process executed a new image.
    Exec(Exec),
    /// A process exited.
    Exit(Exit),
    /// A process started a new process.
    Fork(Fork),
    /// A watched file changed.
    File(file::File),
    /// A CPU threshold event.
    Cpu(cpu::Cpu),
    /// A connection.
    Connect(connect::Connect),
}

impl Body {
    /// The kind of event this body belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            Body::Exec(_) => Kind::Exec,
            Body::Exit(_) => Kind::Exit,
            Body::Fork(_) => Kind::Fork,
            Body::File(_) => Kind::File,
            Body::Cpu(c) => c.state.kind(),
            Body::Connect(_) => Kind::Connect,
        }
    }
}

/// An `execve` that succeeded. The process context's `exe` is the path of
/// the executable the kernel loaded, whatever name it was started by.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// File name passed to `execve`, as the caller spelled it (relative,
    /// through a symlink, `/dev/fd/N` for `fexecve`).
    pub filename: String,
    /// Arguments of the new image.
    pub argv: Vec<String>,
    /// Whether the argument list was cut at the probe's limit.
    pub argv_truncated: bool,
    /// Device of the executable the kernel loaded (`major << 20 | minor`);
    /// 0 when unknown.
    #[serde(default)]
    pub dev: u32,
    /// Inode of the executable the kernel loaded; 0 when unknown.
    #[serde(default)]
    pub ino: u64,
    /// Whether the kernel killed the process at exec, before it ran.
    #[serde(default)]
    pub killed: bool,
    /// The file `execve` named when the kernel ran it through an
    /// interpreter (`#!` scripts, binfmt_misc), resolved; the loaded
    /// executable is then the interpreter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Paths that exec policies name and that are this same file (device
    /// and inode): the name a hardlink or bind mount hides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Identity of `script`, when it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_id: Option<FileId>,
    /// Set when neither the loaded file nor its script is a file the exec
    /// policies name as the agent sees them: another file at a covered path
    /// (bind-mounted over it in a private mount namespace). Such a kill
    /// does not count toward the policy's kill fuse.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub foreign: bool,
    /// Path of the loaded executable as the kernel walked it; it becomes
    /// the process context's `exe`.
    #[serde(skip)]
    pub loaded: Option<String>,
}

impl Exec {
    /// The identity of the loaded executable, when the kernel read it.
    pub fn identity(&self) -> Option<FileId> {
        (self.dev != 0 || self.ino != 0).then_some(FileId {
            dev: self.dev,
            ino: self.ino,
        })
    }
}

/// A new process (not a thread); the event's task is the one that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    /// Process id of the new process.
    pub child_pid: u32,
    /// Whether the new process's parent is the caller's parent
    /// (`CLONE_PARENT`) rather than the caller.
    pub sibling: bool,
}

/// A process exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit status, when the process exited by itself.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
}

impl Exit {
    /// Splits the kernel's `exit_code` (wait status layout).
    pub fn from_raw(raw: u32) -> Self {
        let signal = raw & 0x7f;
        if signal == 0 {
            Self {
                code: Some(((raw >> 8) & 0xff) as i32),
                signal: None,
                core_dumped: false,
            }
        } else {
            Self {
                code: None,
                signal: Some(signal as i32),
                core_dumped: raw & 0x80 != 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    #[test]
    fn exit_status_layout() {
        assert_eq!(Exit::from_raw(3 << 8).code, Some(3));
        let killed = Exit::from_raw(9);
        assert_eq!((killed.code, killed.signal), (None, Some(9)));
        assert!(Exit::from_raw(0x80 | 11).core_dumped);
    }
}
