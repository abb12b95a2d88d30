//! The header every event record starts with.

use crate::COMM_LEN;

/// Fixed header at the start of every record in the event ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`crate::EventKind`] value.
    pub kind: u32,
    /// Size of the whole record in bytes, header included.
    pub size: u32,
    /// `bpf_ktime_get_boot_ns()` when the probe ran (`CLOCK_BOOTTIME`).
    pub ktime_ns: u64,
    /// Thread id of the task that triggered the event.
    pub pid: u32,
    /// Process id (thread-group id).
    pub tgid: u32,
    /// Process id of the real parent.
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Explicit padding so `cgroup_id` is 8-byte aligned.
    pub _pad: u32,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    /// Task command name, NUL padded.
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 64);
