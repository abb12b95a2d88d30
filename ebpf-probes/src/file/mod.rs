//! File family: changes to watched files, from handlers the syscall
//! dispatchers ([`crate::syscall`]) tail-call at the entry and exit of each
//! syscall through which a file can change.
//!
//! Opens and fd-based calls are matched by identity: the descriptor's
//! `struct file` gives the device and inode, looked up in `WATCHED` (or the
//! directory's in `WATCHED_DIRS`). Path-based calls carry only a user
//! string; the hash of its last component is looked up in `WATCHED_NAMES`,
//! and the agent verifies each hit against the real file. Every change is
//! held per thread at syscall entry and sent at exit, only if it succeeded.

mod fd;
mod open;
mod path;

use core::{mem::size_of, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel, bpf_send_signal},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use reflex_wire::{
    EventKind, FileEvent, FileKey, LossFamily, LossReason,
    file::{PATH_MAX, flag},
    programs,
};

use crate::{
    event::header,
    maps::{FILE_EVENTS, OFFSETS, PENDING, SCRATCH, count_loss, is_excluded},
    syscall, task,
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

const SIGKILL: u32 = 9;

/// `SYS_EXIT` of every fd- and path-based change (tail call from
/// `raw_tp/sys_exit`): sends the change held at entry if the syscall
/// succeeded; a full ring buffer is counted as a loss.
#[raw_tracepoint]
pub fn exit_file_op(ctx: RawTracePointContext) -> u32 {
    if let Err(reason) = try_exit_file_op(&ctx) {
        count_loss(reason, LossFamily::File);
    }
    0
}
exported_as!(exit_file_op, programs::EXIT_FILE_OP);

fn try_exit_file_op(ctx: &RawTracePointContext) -> Result<(), LossReason> {
    let (tid, _) = task::ids();
    let Some(op) = PENDING.get_ptr_mut(tid) else {
        return Ok(());
    };
    let ret = syscall::ret(ctx);
    let sent = if ret >= 0 {
        // SAFETY: the pointer comes from a successful lookup and stays valid
        // until the entry is removed below.
        emit(unsafe { &*op }, ret)
    } else {
        Ok(())
    };
    let _ = PENDING.remove(tid);
    sent
}

/// Identity of an open file.
#[inline(always)]
fn file_key(file: u64) -> Option<FileKey> {
    let inode: u64 = task::read(file, OFFSETS.load().file_inode).ok()?;
    task::inode_key(inode)
}

/// The dentry of an open file and the identity of its directory.
#[inline(always)]
fn dir_key(file: u64) -> Option<(u64, FileKey)> {
    let off = OFFSETS.load();
    let dentry: u64 = task::read(file, off.file_dentry).ok()?;
    let parent: u64 = task::read(dentry, off.dentry_parent).ok()?;
    let inode: u64 = task::read(parent, off.dentry_inode).ok()?;
    Some((dentry, task::inode_key(inode)?))
}

/// Sends SIGKILL to the current task and says so; never to init (pid 1)
/// nor to the agent or its hooks (excluded), whatever a policy says.
#[inline(always)]
fn kill_current() -> u32 {
    let (_, tgid) = task::ids();
    if tgid <= 1 || is_excluded(tgid) {
        return 0;
    }
    // SAFETY: the helper signals the current task only.
    let sent = unsafe { bpf_send_signal(SIGKILL) };
    if sent == 0 { flag::KILLED } else { 0 }
}

/// Stores zero through `ptr` so that LLVM cannot merge it with its
/// neighbours into a `memset` call, which the BPF target cannot make.
///
/// # Safety
/// `ptr` must be valid for a write of `T`: a field of a reserved ring
/// buffer slot or of this CPU's scratch map value.
#[inline(always)]
unsafe fn zero<T: Default>(ptr: *mut T) {
    // SAFETY: `ptr` is valid for writes (the caller's contract).
    unsafe { core::ptr::write_volatile(ptr, T::default()) }
}

/// This CPU's scratch [`FileOp`].
#[inline(always)]
fn scratch() -> Option<&'static mut FileOp> {
    let ptr = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: a per-CPU map slot, used by one program at a time on this CPU.
    Some(unsafe { &mut *ptr })
}

/// Fills `op` for a change to the file `key` made through descriptor `fd`.
#[inline(always)]
fn inode_op(op: &mut FileOp, change: u32, flags: u32, key: FileKey, fd: u64) {
    op.change = change;
    op.flags = flags;
    op.file.dev = key.dev;
    // SAFETY: a field of `op`, which is borrowed mutably.
    unsafe { zero(addr_of_mut!(op.file._pad)) };
    op.file.ino = key.ino;
    op.fd = fd as i32;
    op.path_len = 0;
    op.path2_len = 0;
}

/// Sends `op` as a [`FileEvent`].
#[inline(always)]
fn emit(op: &FileOp, ret: i64) -> Result<(), LossReason> {
    let mut entry = FILE_EVENTS
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
