//! Names of the programs in the kernel object: the probes' function names,
//! by which the agent's loader finds them. The `#[tracepoint]`-style macros
//! export a program under its function's name and take no constant, so the
//! probes check each function against these at compile time (`exported_as!`
//! in `ebpf-probes/src/main.rs`).

/// Tracepoint category of the process family's programs; each program is
/// named after its tracepoint (`tracepoint/sched/<name>`).
pub const SCHED: &str = "sched";
/// The tracepoint category of [`TASK_NEWTASK`].
pub const TASK: &str = "task";
/// `tracepoint/sched/sched_process_exec`.
pub const SCHED_PROCESS_EXEC: &str = "sched_process_exec";
/// `tracepoint/sched/sched_process_exit`.
pub const SCHED_PROCESS_EXIT: &str = "sched_process_exit";
/// `tracepoint/sched/sched_process_fork`.
pub const SCHED_PROCESS_FORK: &str = "sched_process_fork";

/// `perf_event` on the software CPU clock.
pub const CPU_SAMPLE: &str = "cpu_sample";

/// `tracepoint/task/task_newtask`: a new process (not a thread).
pub const TASK_NEWTASK: &str = "task_newtask";

/// `cgroup/connect4`.
pub const CONNECT4: &str = "connect4";
/// `cgroup/connect6`.
pub const CONNECT6: &str = "connect6";
/// `cgroup/sendmsg4`.
pub const SENDMSG4: &str = "sendmsg4";
/// `cgroup/sendmsg6`.
pub const SENDMSG6: &str = "sendmsg6";

/// `raw_tp/sys_enter`, the dispatcher into `SYS_ENTER`; named after its tracepoint.
pub const SYS_ENTER: &str = "sys_enter";
/// `raw_tp/sys_exit`, the dispatcher into `SYS_EXIT`; named after its tracepoint.
pub const SYS_EXIT: &str = "sys_exit";

/// Handler at the exit of `accept` and `accept4`.
pub const EXIT_ACCEPT: &str = "exit_accept";
/// Handler at the exit of `listen`.
pub const EXIT_LISTEN: &str = "exit_listen";

/// Handler at the entry of `open`.
pub const ENTER_OPEN: &str = "enter_open";
/// Handler at the entry of `openat`.
pub const ENTER_OPENAT: &str = "enter_openat";
/// Handler at the entry of `openat2`.
pub const ENTER_OPENAT2: &str = "enter_openat2";
/// Handler at the entry of `creat`.
pub const ENTER_CREAT: &str = "enter_creat";
/// Handler at the exit of the `open` family.
pub const EXIT_OPEN: &str = "exit_open";
/// Handler at the entry of `close`.
pub const ENTER_CLOSE: &str = "enter_close";
/// Handler at the entry of `ftruncate`.
pub const ENTER_FTRUNCATE: &str = "enter_ftruncate";
/// Handler at the entry of `fchmod`.
pub const ENTER_FCHMOD: &str = "enter_fchmod";
/// Handler at the entry of `fchown`.
pub const ENTER_FCHOWN: &str = "enter_fchown";
/// Handler at the entry of `unlink`.
pub const ENTER_UNLINK: &str = "enter_unlink";
/// Handler at the entry of `unlinkat`.
pub const ENTER_UNLINKAT: &str = "enter_unlinkat";
/// Handler at the entry of `rename`.
pub const ENTER_RENAME: &str = "enter_rename";
/// Handler at the entry of `renameat` and `renameat2`.
pub const ENTER_RENAMEAT: &str = "enter_renameat";
/// Handler at the entry of `link`.
pub const ENTER_LINK: &str = "enter_link";
/// Handler at the entry of `linkat`.
pub const ENTER_LINKAT: &str = "enter_linkat";
/// Handler at the entry of `symlink`.
pub const ENTER_SYMLINK: &str = "enter_symlink";
/// Handler at the entry of `symlinkat`.
pub const ENTER_SYMLINKAT: &str = "enter_symlinkat";
/// Handler at the entry of `truncate`.
pub const ENTER_TRUNCATE: &str = "enter_truncate";
/// Handler at the entry of `chmod`.
pub const ENTER_CHMOD: &str = "enter_chmod";
/// Handler at the entry of `fchmodat` and `fchmodat2`.
pub const ENTER_FCHMODAT: &str = "enter_fchmodat";
/// Handler at the entry of `chown` and `lchown`.
pub const ENTER_CHOWN: &str = "enter_chown";
/// Handler at the entry of `fchownat`.
pub const ENTER_FCHOWNAT: &str = "enter_fchownat";
/// Handler at the exit of every fd- and path-based change.
pub const EXIT_FILE_OP: &str = "exit_file_op";

/// Every program in the object.
pub const ALL: [&str; 36] = [
    SCHED_PROCESS_EXEC,
    SCHED_PROCESS_EXIT,
    SCHED_PROCESS_FORK,
    TASK_NEWTASK,
    CPU_SAMPLE,
    CONNECT4,
    CONNECT6,
    SENDMSG4,
    SENDMSG6,
    SYS_ENTER,
    SYS_EXIT,
    EXIT_ACCEPT,
    EXIT_LISTEN,
    ENTER_OPEN,
    ENTER_OPENAT,
    ENTER_OPENAT2,
    ENTER_CREAT,
    EXIT_OPEN,
    ENTER_CLOSE,
    ENTER_FTRUNCATE,
    ENTER_FCHMOD,
    ENTER_FCHOWN,
    ENTER_UNLINK,
    ENTER_UNLINKAT,
    ENTER_RENAME,
    ENTER_RENAMEAT,
    ENTER_LINK,
    ENTER_LINKAT,
    ENTER_SYMLINK,
    ENTER_SYMLINKAT,
    ENTER_TRUNCATE,
    ENTER_CHMOD,
    ENTER_FCHMODAT,
    ENTER_CHOWN,
    ENTER_FCHOWNAT,
    EXIT_FILE_OP,
];
