//! Kernel struct field offsets, resolved by the agent from BTF at load time.

/// Name of the probes' global the agent writes a [`KernelOffsets`] into.
pub const GLOBAL: &str = "OFFSETS";

/// Byte offsets of the kernel struct fields the probes read. The probes carry
/// no hard-coded layout: the agent fills this from `/sys/kernel/btf/vmlinux`
/// and writes it into the `OFFSETS` global before loading the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Offset of `old_pid` in the `sched_process_exec` record.
    pub tp_exec_old_pid: u32,
    /// Offset of `group_dead` in the `sched_process_exit` record; 0 if the
    /// kernel has no such field (then only the thread-group leader's exit counts).
    pub tp_exit_group_dead: u32,
    /// Offset of `child_pid` in the `sched_process_fork` record.
    pub tp_fork_child_pid: u32,
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.max_fds`.
    pub fdtable_max_fds: u32,
    /// `fdtable.fd`.
    pub fdtable_fd: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `file.f_path.dentry`.
    pub file_dentry: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `inode.i_mode`.
    pub inode_mode: u32,
    /// `super_block.s_dev`.
    pub sb_dev: u32,
    /// `dentry.d_parent`.
    pub dentry_parent: u32,
    /// `dentry.d_inode`.
    pub dentry_inode: u32,
    /// `dentry.d_name.name`.
    pub dentry_name: u32,
    /// `file.f_mode`.
    pub file_mode: u32,
    /// `file.private_data` (a `struct socket *` for sockets).
    pub file_private: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// `sock.__sk_common.skc_family`.
    pub sk_family: u32,
    /// `sock.__sk_common.skc_daddr`.
    pub sk_daddr: u32,
    /// `sock.__sk_common.skc_rcv_saddr`.
    pub sk_saddr: u32,
    /// `sock.__sk_common.skc_dport` (network order).
    pub sk_dport: u32,
    /// `sock.__sk_common.skc_num` (host order).
    pub sk_num: u32,
    /// `sock.__sk_common.skc_v6_daddr`.
    pub sk_v6_daddr: u32,
    /// `sock.__sk_common.skc_v6_rcv_saddr`.
    pub sk_v6_saddr: u32,
    /// `sock.sk_protocol`.
    pub sk_protocol: u32,
    /// `mm_struct.exe_file`: the executable a process runs.
    pub mm_exe_file: u32,
    /// `file.f_path.mnt`.
    pub file_vfsmount: u32,
    /// `vfsmount.mnt_root`.
    pub vfsmount_root: u32,
    /// `mount.mnt`: the `vfsmount` embedded in a `struct mount`.
    pub mount_mnt: u32,
    /// `mount.mnt_parent`.
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`.
    pub mount_mountpoint: u32,
    /// `dentry.d_name.len`.
    pub dentry_name_len: u32,
    /// Offset of `pid` in the `task_newtask` record.
    pub tp_newtask_pid: u32,
    /// Offset of `clone_flags` (u64) in the `task_newtask` record.
    pub tp_newtask_clone_flags: u32,
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 172);

impl KernelOffsets {
    /// All offsets zero: the value compiled into the probes before the agent
    /// overrides it.
    pub const ZERO: Self = Self {
        task_real_parent: 0,
        task_tgid: 0,
        task_exit_code: 0,
        task_mm: 0,
        mm_arg_start: 0,
        mm_arg_end: 0,
        tp_exec_filename: 0,
        tp_exec_old_pid: 0,
        tp_exit_group_dead: 0,
        tp_fork_child_pid: 0,
        task_files: 0,
        files_fdt: 0,
        fdtable_max_fds: 0,
        fdtable_fd: 0,
        file_inode: 0,
        file_dentry: 0,
        inode_ino: 0,
        inode_sb: 0,
        inode_mode: 0,
        sb_dev: 0,
        dentry_parent: 0,
        dentry_inode: 0,
        dentry_name: 0,
        file_mode: 0,
        file_private: 0,
        socket_sk: 0,
        sk_family: 0,
        sk_daddr: 0,
        sk_saddr: 0,
        sk_dport: 0,
        sk_num: 0,
        sk_v6_daddr: 0,
        sk_v6_saddr: 0,
        sk_protocol: 0,
        mm_exe_file: 0,
        file_vfsmount: 0,
        vfsmount_root: 0,
        mount_mnt: 0,
        mount_parent: 0,
        mount_mountpoint: 0,
        dentry_name_len: 0,
        tp_newtask_pid: 0,
        tp_newtask_clone_flags: 0,
    };
}

impl Default for KernelOffsets {
    fn default() -> Self {
        Self::ZERO
    }
}
