//! Payloads of the process family: exec, exit and fork.

use crate::{EventHeader, FileKey};

/// Bytes of the executed file name the probe copies.
pub const EXE_MAX: usize = 512;
/// Bytes of the NUL-separated argument block the probe copies.
pub const ARGS_MAX: usize = 1024;
/// Bytes of the loaded executable's path the probe builds (longer paths
/// are cut at the front and flagged [`exec_flag::PATH_CUT`]).
pub const EXE_PATH_MAX: usize = 512;

/// `ExecEvent.flags` bits.
pub mod exec_flag {
    /// The probe sent SIGKILL to the task: its identity is in `EXEC_KILL`.
    pub const KILLED: u32 = 1;
    /// `path` is incomplete (too deep or too long): do not trust it.
    pub const PATH_CUT: u32 = 2;
}

/// `EXEC_KILL` and `EXEC_KILL_NAMES` map value bits.
pub mod exec_kill {
    /// `EXEC_KILL`: kill the task at exec.
    pub const KILL: u32 = 1;
    /// `EXEC_KILL_NAMES`: kill when the whole name is the key's bytes.
    pub const EXACT: u32 = 2;
    /// `EXEC_KILL_NAMES`: kill when the name starts with the key's bytes.
    pub const PREFIX: u32 = 4;
}

/// Bytes of an executable's name the probe reads to match `EXEC_KILL_NAMES`,
/// NUL included: names, or starts of names, of up to 63 bytes match.
pub const EXEC_NAME_MAX: usize = 64;

/// Key of `EXEC_KILL_NAMES`: a name, or the start of one, in a directory,
/// so that a file that lands under a covered name is killed before the
/// agent has seen it (its identity is new).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExecName {
    /// Identity of the directory.
    pub dir: FileKey,
    /// Bytes of the name hashed, at most [`EXEC_NAME_MAX`].
    pub len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// FNV-1a of those bytes (`file::name_hash_step` from `NAME_HASH_START`).
    pub hash: u64,
}

const _: () = assert!(core::mem::size_of::<ExecName>() == 32);

/// A task replaced its image.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    /// Common header; `kind` is `EventKind::Exec`.
    pub header: EventHeader,
    /// Bytes of `exe` in use, without the terminating NUL.
    pub exe_len: u32,
    /// Bytes of `args` in use.
    pub args_len: u32,
    /// 1 when the argument block was longer than `ARGS_MAX`.
    pub args_truncated: u32,
    /// [`exec_flag`] bits.
    pub flags: u32,
    /// Identity of the executable the kernel loaded (`mm->exe_file`);
    /// zero when it could not be read.
    pub file: FileKey,
    /// Bytes of `path` in use.
    pub path_len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// File name passed to `execve`, as the caller spelled it.
    pub exe: [u8; EXE_MAX],
    /// Path of the loaded executable, walked up its dentries and mounts
    /// to the root of the task's mount namespace.
    pub path: [u8; EXE_PATH_MAX],
    /// Arguments, each terminated by NUL, as the new image sees them.
    pub args: [u8; ARGS_MAX],
}

const _: () = assert!(
    core::mem::size_of::<ExecEvent>() == 64 + 16 + 16 + 8 + EXE_MAX + EXE_PATH_MAX + ARGS_MAX
);

/// The last thread of a process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    /// Common header; `kind` is `EventKind::Exit`.
    pub header: EventHeader,
    /// Raw `task_struct.exit_code`: exit status in bits 8..16, signal in 0..7.
    pub exit_code: u32,
    /// Explicit padding.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<ExitEvent>() == 72);

/// `clone` flag: the new task is a thread of the caller's process.
pub const CLONE_THREAD: u64 = 0x0001_0000;
/// `clone` flag: the new process's parent is the caller's parent.
pub const CLONE_PARENT: u32 = 0x0000_8000;

/// A task started a new process (threads are not reported). The header
/// names the task that called `fork`/`clone`; the child has not run yet.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    /// Common header; `kind` is `EventKind::Fork`.
    pub header: EventHeader,
    /// Process id of the new process.
    pub child_pid: u32,
    /// Low 32 bits of the clone flags (`CLONE_PARENT` among them).
    pub clone_flags: u32,
}

const _: () = assert!(core::mem::size_of::<ForkEvent>() == 72);
