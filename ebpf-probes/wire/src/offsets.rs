//! Kernel struct field offsets, resolved by the agent from BTF at load time.

/// Byte offsets of the kernel struct fields the probes read. The probes carry
/// no hard-coded layout: the agent fills this from `/sys/kernel/btf/vmlinux`
/// and writes it into the `OFFSETS` global before loading the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.real_parent`.
    pub task_real_parent: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.exit_code`.
    pub task_exit_code: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `mm_struct.arg_start`.
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`.
    pub mm_arg_end: u32,
    /// Offset of the `__data_loc filename` field in the `sched_process_exec` record.
    pub tp_exec_filename: u32,
    /// Offset of `group_dead` in the `sched_process_exit` record; 0 if the
    /// kernel has no such field (then only the thread-group leader's exit counts).
    pub tp_exit_group_dead: u32,
    /// Offset of `child_pid` in the `sched_process_fork` record.
    pub tp_fork_child_pid: u32,
    /// Explicit padding.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 40);
