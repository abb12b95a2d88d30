//! File family: changes to watched files, from the `sys_enter` and
//! `sys_exit` raw tracepoints. Two dispatchers tail-call a handler per
//! syscall of interest (`SYS_ENTER` / `SYS_EXIT`, filled by the agent), so
//! attaching and detaching cost two links, not fifty.
//!
//! Opens and fd-based calls are matched by identity: the descriptor's
//! `struct file` gives the device and inode, looked up in `WATCHED` (or the
//! directory's in `WATCHED_DIRS`). Path-based calls carry only a user
//! string; the hash of its last component is looked up in `WATCHED_NAMES`,
//! and the agent verifies each hit against the real file. Every change is
//! held per thread at syscall entry and sent at exit, only if it succeeded.

use core::{ffi::c_void, mem::size_of, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user,
            bpf_probe_read_user_str, bpf_send_signal,
        },
    },
    macros::{map, raw_tracepoint},
    maps::ProgramArray,
    programs::RawTracePointContext,
};
use reflex_wire::{
    EventKind, FileEvent, FileKey, LossFamily, LossReason,
    file::{NAME_HASH_START, NAME_MAX, PATH_MAX, change, flag, name_hash_step, watch},
    syscalls,
};

use crate::{
    event::header,
    maps::{
        EVENTS, OFFSETS, OPEN_SLOT, PENDING, SCRATCH, WATCHED, WATCHED_DIRS, WATCHED_NAMES,
        WRITE_FDS, count_loss, is_excluded,
    },
    task,
};

/// A change held between syscall entry and exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileOp {
    change: u32,
    flags: u32,
    file: FileKey,
    fd: i32,
    path_len: u32,
    path2_len: u32,
    _pad: u32,
    path: [u8; PATH_MAX],
    path2: [u8; PATH_MAX],
}

const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const SIGKILL: u32 = 9;
/// `file.f_mode` bits.
const FMODE_WRITE: u32 = 0x2;
const FMODE_CREATED: u32 = 0x10_0000;

/// Handlers run at syscall entry, by syscall number.
#[map]
static SYS_ENTER: ProgramArray = ProgramArray::with_max_entries(SYSCALL_SLOTS, 0);

/// Handlers run at syscall exit, by syscall number.
#[map]
static SYS_EXIT: ProgramArray = ProgramArray::with_max_entries(SYSCALL_SLOTS, 0);

/// Syscall numbers the jump tables cover.
const SYSCALL_SLOTS: u32 = syscalls::SLOTS;

/// Offsets in x86-64 `struct pt_regs` (uapi, stable) of the syscall
/// arguments in order, and of the syscall number.
#[cfg(bpf_target_arch = "x86_64")]
const ARG_REGS: [u32; 6] = [112, 104, 96, 56, 72, 64];
#[cfg(bpf_target_arch = "x86_64")]
const ORIG_AX: u32 = 120;

/// `raw_tp/sys_enter`: hands the syscall to its handler, if it has one.
/// Every other syscall costs a bit test.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let id: u64 = ctx.arg(1);
    if syscalls::handled(id) {
        // SAFETY: a tail call either jumps to a loaded handler of the same
        // program type or fails and returns here.
        unsafe { SYS_ENTER.tail_call(&ctx, id as u32) };
    }
    0
}

/// `raw_tp/sys_exit`: as [`sys_enter`], at syscall exit.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: u64 = ctx.arg(0);
    let id: u64 = task::read(regs, ORIG_AX).unwrap_or(u64::MAX);
    if syscalls::handled(id) {
        // SAFETY: as in `sys_enter`.
        unsafe { SYS_EXIT.tail_call(&ctx, id as u32) };
    }
    0
}

/// Syscall return value, in an exit handler.
#[inline(always)]
pub fn ret(ctx: &RawTracePointContext) -> i64 {
    ctx.arg(1)
}

fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    (id as u32, (id >> 32) as u32)
}

/// Reads syscall argument `n` from the saved user registers (still there
/// at exit: a syscall only changes the return register).
#[inline(always)]
pub fn read_arg(ctx: &RawTracePointContext, n: usize) -> u64 {
    let regs: u64 = ctx.arg(0);
    let Some(&offset) = ARG_REGS.get(n) else {
        return 0;
    };
    task::read(regs, offset).unwrap_or(0)
}

/// The `struct file` behind descriptor `fd` of the current task.
#[inline(always)]
pub fn fd_file(fd: u64) -> Option<u64> {
    let off = OFFSETS.load();
    let files: u64 = task::read(task::current(), off.task_files).ok()?;
    let fdt: u64 = task::read(files, off.files_fdt).ok()?;
    let max: u32 = task::read(fdt, off.fdtable_max_fds).ok()?;
    if fd >= max as u64 {
        return None;
    }
    let table: u64 = task::read(fdt, off.fdtable_fd).ok()?;
    let file: u64 = task::read(table, (fd * 8) as u32).ok()?;
    (file != 0).then_some(file)
}

/// Device and inode of an inode pointer.
#[inline(always)]
fn inode_key(inode: u64) -> Option<FileKey> {
    let off = OFFSETS.load();
    let ino: u64 = task::read(inode, off.inode_ino).ok()?;
    let sb: u64 = task::read(inode, off.inode_sb).ok()?;
    let dev: u32 = task::read(sb, off.sb_dev).ok()?;
    Some(FileKey { dev, _pad: 0, ino })
}

/// Identity of an open file.
#[inline(always)]
fn file_key(file: u64) -> Option<FileKey> {
    let inode: u64 = task::read(file, OFFSETS.load().file_inode).ok()?;
    inode_key(inode)
}

/// The dentry of an open file and the identity of its directory.
#[inline(always)]
fn dir_key(file: u64) -> Option<(u64, FileKey)> {
    let off = OFFSETS.load();
    let dentry: u64 = task::read(file, off.file_dentry).ok()?;
    let parent: u64 = task::read(dentry, off.dentry_parent).ok()?;
    let inode: u64 = task::read(parent, off.dentry_inode).ok()?;
    Some((dentry, inode_key(inode)?))
}

/// Sends SIGKILL to the current task and says so; never to init (pid 1)
/// nor to the agent or its hooks (excluded), whatever a policy says.
#[inline(always)]
fn kill_current() -> u32 {
    let (_, tgid) = current_ids();
    if tgid <= 1 || is_excluded(tgid) {
        return 0;
    }
    // SAFETY: the helper signals the current task only.
    let sent = unsafe { bpf_send_signal(SIGKILL) };
    if sent == 0 { flag::KILLED } else { 0 }
}

// ---- opens -------------------------------------------------------------

/// Whether open flags can change a file.
#[inline(always)]
fn writes(flags: u64) -> bool {
    flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC) != 0
}

/// Remembers the flags of every open until the syscall returns, so that the
/// exit of a read-only open costs no kernel reads.
#[inline(always)]
fn stash_open(flags: u64) -> i32 {
    if let Some(slot) = OPEN_SLOT.get_ptr_mut(0) {
        let (tid, _) = current_ids();
        // SAFETY: this CPU's slot; programs do not preempt each other here.
        unsafe {
            (*slot).tid = tid;
            (*slot).flags = flags as u32;
        }
    }
    0
}

/// Entry of `openat`: flags are argument 2.
#[raw_tracepoint]
pub fn enter_openat(ctx: RawTracePointContext) -> i32 {
    stash_open(read_arg(&ctx, 2))
}

/// Entry of `open`: flags are argument 1.
#[raw_tracepoint]
pub fn enter_open(ctx: RawTracePointContext) -> i32 {
    stash_open(read_arg(&ctx, 1))
}

/// Entry of `creat`: always a create for writing.
#[raw_tracepoint]
pub fn enter_creat(_ctx: RawTracePointContext) -> i32 {
    stash_open(O_CREAT | O_WRONLY | O_TRUNC)
}

/// Entry of `openat2`: flags are the first field of `open_how`.
#[raw_tracepoint]
pub fn enter_openat2(ctx: RawTracePointContext) -> i32 {
    let how = read_arg(&ctx, 2);
    let mut flags = 0u64;
    // SAFETY: reads 8 bytes of user memory into `flags`; fails cleanly.
    unsafe { bpf_probe_read_user(addr_of_mut!(flags).cast(), 8, how as *const c_void) };
    stash_open(flags)
}

/// Exit of the `open` family: a write-open of a watched file, or of a file in
/// a watched directory, is reported (and killed if the policy says so).
#[raw_tracepoint]
pub fn exit_open(ctx: RawTracePointContext) -> i32 {
    if let Err(reason) = try_exit_open(&ctx) {
        count_loss(reason, LossFamily::File);
    }
    0
}

fn try_exit_open(ctx: &RawTracePointContext) -> Result<(), LossReason> {
    let (tid, tgid) = current_ids();
    let ret = ret(ctx);
    // The flags stashed at entry on this CPU; `hit` is false when this
    // thread's entry ran elsewhere.
    let mut hit = false;
    let mut stashed = 0u32;
    if let Some(slot) = OPEN_SLOT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, read and cleared by this program only.
        unsafe {
            if (*slot).tid == tid {
                hit = true;
                stashed = (*slot).flags;
                (*slot).tid = 0;
            }
        }
    }
    if ret < 0 || (hit && !writes(stashed as u64)) {
        return Ok(());
    }
    let Some(file) = fd_file(ret as u64) else {
        return Ok(());
    };
    let open_flags = if hit {
        stashed
    } else {
        // Entered on another CPU: read whether the file is open for writing.
        match task::read::<u32>(file, OFFSETS.load().file_mode) {
            Ok(mode) if mode & FMODE_WRITE != 0 => {
                O_WRONLY as u32
                    | if mode & FMODE_CREATED != 0 {
                        O_CREAT as u32
                    } else {
                        0
                    }
            }
            _ => return Ok(()),
        }
    };
    let Some(key) = file_key(file) else {
        return Ok(());
    };
    let mut flags = 0;
    let mut dentry = 0;
    let mut dir = FileKey::default();
    // SAFETY: plain u32 map values, copied.
    if let Some(bits) = unsafe { WATCHED.get(&key) }.copied() {
        // The exclusion lookup waits until a watched file is hit.
        if is_excluded(tgid) {
            return Ok(());
        }
        flags |= flag::BY_INODE;
        if bits & watch::KILL != 0 {
            flags |= kill_current();
        }
    } else if open_flags as u64 & O_CREAT != 0
        && let Some((d, parent)) = dir_key(file)
        // SAFETY: as above.
        && unsafe { WATCHED_DIRS.get(&parent) }.is_some()
    {
        // Only creating opens count: a watched directory is for files that
        // appear (uploads, a deleted watched file made again) and for a
        // restored file written before its new inode is in `WATCHED` (so
        // an O_CREAT open of an existing file is looked at too: the
        // benchmark's back-to-back writes showed that window).
        flags |= flag::BY_DIR;
        dentry = d;
        dir = parent;
    } else {
        return Ok(());
    }
    if flags & flag::BY_DIR != 0 && is_excluded(tgid) {
        return Ok(());
    }
    if dentry == 0 {
        dentry = dir_key(file).map(|(d, _)| d).unwrap_or(0);
    }
    let _ = WRITE_FDS.insert(((tgid as u64) << 32) | ret as u64, key, 0);

    let mut entry = EVENTS
        .reserve::<FileEvent>(0)
        .ok_or(LossReason::RingbufFull)?;
    let event = entry.as_mut_ptr();
    let name_ptr: u64 = task::read(dentry, OFFSETS.load().dentry_name).unwrap_or(0);
    // SAFETY: `event` is a reserved slot sized for a `FileEvent`; every field
    // is written before submit (byte arrays up to their recorded lengths),
    // and the string helper is bounded by NAME_MAX.
    unsafe {
        addr_of_mut!((*event).header).write(header(EventKind::File, size_of::<FileEvent>()));
        addr_of_mut!((*event).change).write(change::WRITE);
        addr_of_mut!((*event).flags).write(flags);
        addr_of_mut!((*event).file).write(key);
        addr_of_mut!((*event).dir).write(dir);
        addr_of_mut!((*event).open_flags).write(open_flags);
        addr_of_mut!((*event).fd).write(ret as i32);
        addr_of_mut!((*event).ret).write(ret);
        let copied = bpf_probe_read_kernel_str(
            addr_of_mut!((*event).name).cast(),
            NAME_MAX as u32,
            name_ptr as *const c_void,
        );
        addr_of_mut!((*event).name_len).write(if copied > 0 { copied as u32 - 1 } else { 0 });
        zero(addr_of_mut!((*event).path_len));
        zero(addr_of_mut!((*event).path2_len));
        zero(addr_of_mut!((*event)._pad));
    }
    entry.submit(0);
    Ok(())
}

/// Entry of `close`: the close of a descriptor opened for writing on a
/// watched file; the content is final now.
#[raw_tracepoint]
pub fn enter_close(ctx: RawTracePointContext) -> i32 {
    let fd = read_arg(&ctx, 0);
    let (_, tgid) = current_ids();
    let slot = ((tgid as u64) << 32) | (fd & 0xffff_ffff);
    // SAFETY: plain-data map value, copied before removal.
    let Some(key) = (unsafe { WRITE_FDS.get(&slot) }).copied() else {
        return 0;
    };
    let _ = WRITE_FDS.remove(&slot);
    let Some(op) = scratch() else { return 0 };
    inode_op(op, change::CLOSE_WRITE, flag::BY_INODE, key, fd);
    if let Err(reason) = emit(op, 0) {
        count_loss(reason, LossFamily::File);
    }
    0
}

/// Fills `op` for a change to the file `key` made through descriptor `fd`.
#[inline(always)]
fn inode_op(op: &mut FileOp, change: u32, flags: u32, key: FileKey, fd: u64) {
    op.change = change;
    op.flags = flags;
    op.file.dev = key.dev;
    zero(addr_of_mut!(op.file._pad));
    op.file.ino = key.ino;
    op.fd = fd as i32;
    op.path_len = 0;
    op.path2_len = 0;
}

// ---- fd-based changes --------------------------------------------------

/// Holds a change made through descriptor `fd` if its file is watched.
#[inline(always)]
fn on_fd_op(ctx: &RawTracePointContext, change: u32) -> i32 {
    let (tid, tgid) = current_ids();
    if is_excluded(tgid) {
        return 0;
    }
    let fd = read_arg(ctx, 0);
    let Some(key) = fd_file(fd).and_then(file_key) else {
        return 0;
    };
    // SAFETY: plain u32 map value, copied.
    let Some(bits) = (unsafe { WATCHED.get(&key) }).copied() else {
        return 0;
    };
    let Some(op) = scratch() else { return 0 };
    let killed = if bits & watch::KILL != 0 {
        kill_current()
    } else {
        0
    };
    inode_op(op, change, flag::BY_INODE | killed, key, fd);
    let _ = PENDING.insert(tid, &*op, 0);
    0
}

/// Entry of `ftruncate`.
#[raw_tracepoint]
pub fn enter_ftruncate(ctx: RawTracePointContext) -> i32 {
    on_fd_op(&ctx, change::TRUNCATE)
}

/// Entry of `fchmod`.
#[raw_tracepoint]
pub fn enter_fchmod(ctx: RawTracePointContext) -> i32 {
    on_fd_op(&ctx, change::CHMOD)
}

/// Entry of `fchown`.
#[raw_tracepoint]
pub fn enter_fchown(ctx: RawTracePointContext) -> i32 {
    on_fd_op(&ctx, change::CHOWN)
}

// ---- path-based changes ------------------------------------------------

/// Copies the user string at `src` into `dst` and returns its length and
/// the hash of its last component.
#[inline(always)]
fn read_path(src: u64, dst: &mut [u8; PATH_MAX]) -> (u32, u64) {
    // SAFETY: the helper writes at most PATH_MAX bytes into `dst` and fails
    // cleanly on a bad user address.
    let n = unsafe {
        bpf_probe_read_user_str(
            dst.as_mut_ptr().cast(),
            PATH_MAX as u32,
            src as *const c_void,
        )
    };
    if n <= 0 {
        return (0, 0);
    }
    let mut hash = NAME_HASH_START;
    let mut i = 0;
    while i < PATH_MAX {
        let Some(&b) = dst.get(i) else { break };
        if b == 0 {
            break;
        }
        hash = if b == b'/' {
            NAME_HASH_START
        } else {
            name_hash_step(hash, b)
        };
        i += 1;
    }
    (n as u32 - 1, hash)
}

/// Holds a path-based change if a path argument's last component is a
/// watched name. `second` is the index of a second path argument, if any.
#[inline(always)]
fn on_path_op(ctx: &RawTracePointContext, change: u32, first: usize, second: Option<usize>) -> i32 {
    let (tid, tgid) = current_ids();
    if is_excluded(tgid) {
        return 0;
    }
    let Some(op) = scratch() else { return 0 };
    let (len, hash) = read_path(read_arg(ctx, first), &mut op.path);
    op.path_len = len;
    op.path2_len = 0;
    let mut hash2 = NAME_HASH_START;
    if let Some(second) = second {
        let (len2, h2) = read_path(read_arg(ctx, second), &mut op.path2);
        op.path2_len = len2;
        hash2 = h2;
    }
    if !name_watched(hash) && !name_watched(hash2) {
        return 0;
    }
    op.change = change;
    op.flags = flag::BY_NAME;
    // Volatile: LLVM would merge adjacent zero stores into a memset, which
    // the BPF target cannot call.
    zero(addr_of_mut!(op.file.dev));
    zero(addr_of_mut!(op.file._pad));
    zero(addr_of_mut!(op.file.ino));
    op.fd = -1;
    let _ = PENDING.insert(tid, &*op, 0);
    0
}

/// Whether `hash` is a watched last component. Not inlined: the verifier
/// must see a scalar, not two map pointers that LLVM would OR together.
#[inline(never)]
fn name_watched(hash: u64) -> bool {
    // SAFETY: plain u32 map values; only presence is read.
    hash != NAME_HASH_START && unsafe { WATCHED_NAMES.get(&hash) }.is_some()
}

macro_rules! path_handler {
    ($name:ident, $change:expr, $first:expr, $second:expr) => {
        #[doc = concat!("Entry of a path-based change (", stringify!($name), ").")]
        #[raw_tracepoint]
        pub fn $name(ctx: RawTracePointContext) -> i32 {
            on_path_op(&ctx, $change, $first, $second)
        }
    };
}

path_handler!(enter_unlink, change::UNLINK, 0, None);
path_handler!(enter_unlinkat, change::UNLINK, 1, None);
path_handler!(enter_rename, change::RENAME, 0, Some(1));
path_handler!(enter_renameat, change::RENAME, 1, Some(3));
path_handler!(enter_link, change::LINK, 0, Some(1));
path_handler!(enter_linkat, change::LINK, 1, Some(3));
path_handler!(enter_symlink, change::LINK, 0, Some(1));
path_handler!(enter_symlinkat, change::LINK, 0, Some(2));
path_handler!(enter_truncate, change::TRUNCATE, 0, None);
path_handler!(enter_chmod, change::CHMOD, 0, None);
path_handler!(enter_fchmodat, change::CHMOD, 1, None);
path_handler!(enter_chown, change::CHOWN, 0, None);
path_handler!(enter_fchownat, change::CHOWN, 1, None);

/// Exit of every fd- and path-based change: sends the change held at entry
/// if the syscall succeeded.
#[raw_tracepoint]
pub fn exit_file_op(ctx: RawTracePointContext) -> i32 {
    let (tid, _) = current_ids();
    let Some(op) = PENDING.get_ptr_mut(&tid) else {
        return 0;
    };
    let ret = ret(&ctx);
    if ret >= 0 {
        // SAFETY: the pointer comes from a successful lookup and stays valid
        // until the entry is removed below.
        if let Err(reason) = emit(unsafe { &*op }, ret) {
            count_loss(reason, LossFamily::File);
        }
    }
    let _ = PENDING.remove(&tid);
    0
}

/// Stores zero through `ptr` so that LLVM cannot merge it with its
/// neighbours into a `memset` call.
#[inline(always)]
fn zero<T: Default>(ptr: *mut T) {
    // SAFETY: callers pass pointers to fields of a reserved ring buffer slot
    // or of this CPU's scratch map value.
    unsafe { core::ptr::write_volatile(ptr, T::default()) }
}

/// This CPU's scratch [`FileOp`].
#[inline(always)]
fn scratch() -> Option<&'static mut FileOp> {
    let ptr = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: a per-CPU map slot, used by one program at a time on this CPU.
    Some(unsafe { &mut *ptr })
}

/// Sends `op` as a [`FileEvent`].
#[inline(always)]
fn emit(op: &FileOp, ret: i64) -> Result<(), LossReason> {
    let mut entry = EVENTS
        .reserve::<FileEvent>(0)
        .ok_or(LossReason::RingbufFull)?;
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved slot sized for a `FileEvent`; every field
    // is written before submit, the byte arrays by bounded kernel copies
    // from `op`, which is map memory.
    unsafe {
        addr_of_mut!((*event).header).write(header(EventKind::File, size_of::<FileEvent>()));
        addr_of_mut!((*event).change).write(op.change);
        addr_of_mut!((*event).flags).write(op.flags);
        // Field by field: a struct copy out of map memory would need memcpy.
        addr_of_mut!((*event).file.dev).write(op.file.dev);
        zero(addr_of_mut!((*event).file._pad));
        addr_of_mut!((*event).file.ino).write(op.file.ino);
        zero(addr_of_mut!((*event).dir.dev));
        zero(addr_of_mut!((*event).dir._pad));
        zero(addr_of_mut!((*event).dir.ino));
        zero(addr_of_mut!((*event).open_flags));
        addr_of_mut!((*event).fd).write(op.fd);
        addr_of_mut!((*event).ret).write(ret);
        zero(addr_of_mut!((*event).name_len));
        addr_of_mut!((*event).path_len).write(op.path_len);
        addr_of_mut!((*event).path2_len).write(op.path2_len);
        zero(addr_of_mut!((*event)._pad));
        bpf_probe_read_kernel(
            addr_of_mut!((*event).path).cast(),
            PATH_MAX as u32,
            op.path.as_ptr().cast(),
        );
        bpf_probe_read_kernel(
            addr_of_mut!((*event).path2).cast(),
            PATH_MAX as u32,
            op.path2.as_ptr().cast(),
        );
    }
    entry.submit(0);
    Ok(())
}
