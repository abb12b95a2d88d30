//! Payloads of the process family: exec, exit and fork.

use crate::EventHeader;

/// Bytes of the executed file name the probe copies.
pub const EXE_MAX: usize = 512;
/// Bytes of the NUL-separated argument block the probe copies.
pub const ARGS_MAX: usize = 1024;

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
    /// Explicit padding.
    pub _pad: u32,
    /// File name passed to `execve`, as the kernel resolved it.
    pub exe: [u8; EXE_MAX],
    /// Arguments, each terminated by NUL, as the new image sees them.
    pub args: [u8; ARGS_MAX],
}

const _: () = assert!(core::mem::size_of::<ExecEvent>() == 64 + 16 + EXE_MAX + ARGS_MAX);

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
