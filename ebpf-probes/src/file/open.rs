//! Opens and closes: a write-open of a watched file (or a creating open in a
//! watched directory) is reported at exit, matched by the identity of the
//! opened file; the close of such a descriptor is reported at entry, when
//! the content is final.

use core::{ffi::c_void, mem::size_of, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel_str, bpf_probe_read_user},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use reflex_wire::{
    EventKind, FileEvent, FileKey, LossFamily, LossReason,
    file::{
        NAME_MAX, change, flag,
        open::{O_CREAT, O_TRUNC, O_WRONLY, WRITES},
        watch,
    },
    programs,
};

use super::{dir_key, emit, file_key, inode_op, kill_current, scratch, zero};
use crate::{
    event::header,
    maps::{
        FILE_EVENTS, OFFSETS, OPEN_SLOT, WATCHED, WATCHED_DIRS, WRITE_FDS, count_loss, is_excluded,
    },
    syscall, task,
};

/// `file.f_mode` bits (kernel-internal, not uapi).
const FMODE_WRITE: u32 = 0x2;
const FMODE_CREATED: u32 = 0x10_0000;

/// Remembers the flags of every open until the syscall returns, so that the
/// exit of a read-only open costs no kernel reads.
#[inline(always)]
fn stash_open(flags: u32) {
    if let Some(slot) = OPEN_SLOT.get_ptr_mut(0) {
        let (tid, _) = task::ids();
        // SAFETY: this CPU's slot; programs do not preempt each other here.
        unsafe {
            (*slot).tid = tid;
            (*slot).flags = flags;
        }
    }
}

/// `SYS_ENTER[openat]` (tail call from `raw_tp/sys_enter`): stashes the
/// flags, argument 2.
#[raw_tracepoint]
pub fn enter_openat(ctx: RawTracePointContext) -> u32 {
    stash_open(syscall::arg(&ctx, 2) as u32);
    0
}
exported_as!(enter_openat, programs::ENTER_OPENAT);

/// `SYS_ENTER[open]` (tail call from `raw_tp/sys_enter`): stashes the
/// flags, argument 1.
#[raw_tracepoint]
pub fn enter_open(ctx: RawTracePointContext) -> u32 {
    stash_open(syscall::arg(&ctx, 1) as u32);
    0
}
exported_as!(enter_open, programs::ENTER_OPEN);

/// `SYS_ENTER[creat]` (tail call from `raw_tp/sys_enter`): always a create
/// for writing.
#[raw_tracepoint]
pub fn enter_creat(_ctx: RawTracePointContext) -> u32 {
    stash_open(O_CREAT | O_WRONLY | O_TRUNC);
    0
}
exported_as!(enter_creat, programs::ENTER_CREAT);

/// `SYS_ENTER[openat2]` (tail call from `raw_tp/sys_enter`): stashes the
/// flags, the first field of the `open_how` at argument 2.
#[raw_tracepoint]
pub fn enter_openat2(ctx: RawTracePointContext) -> u32 {
    let how = syscall::arg(&ctx, 2);
    let mut flags = 0u64;
    // SAFETY: reads 8 bytes of user memory into `flags`; fails cleanly.
    unsafe { bpf_probe_read_user(addr_of_mut!(flags).cast(), 8, how as *const c_void) };
    stash_open(flags as u32);
    0
}
exported_as!(enter_openat2, programs::ENTER_OPENAT2);

/// `SYS_EXIT` of the `open` family (tail call from `raw_tp/sys_exit`): a
/// write-open of a watched file, or a creating open in a watched directory,
/// is reported as a [`FileEvent`] (and the task killed if the policy says
/// so). A thread that entered on another CPU is judged by the opened file's
/// mode instead of its stashed flags.
#[raw_tracepoint]
pub fn exit_open(ctx: RawTracePointContext) -> u32 {
    if let Err(reason) = try_exit_open(&ctx) {
        count_loss(reason, LossFamily::File);
    }
    0
}
exported_as!(exit_open, programs::EXIT_OPEN);

fn try_exit_open(ctx: &RawTracePointContext) -> Result<(), LossReason> {
    let (tid, tgid) = task::ids();
    let ret = syscall::ret(ctx);
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
    if ret < 0 || (hit && stashed & WRITES == 0) {
        return Ok(());
    }
    let Some(file) = task::fd_file(ret as u64) else {
        return Ok(());
    };
    let open_flags = if hit {
        stashed
    } else {
        // Entered on another CPU: read whether the file is open for writing.
        match task::read::<u32>(file, OFFSETS.load().file_mode) {
            Ok(mode) if mode & FMODE_WRITE != 0 => {
                O_WRONLY
                    | if mode & FMODE_CREATED != 0 {
                        O_CREAT
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
    if let Some(bits) = unsafe { WATCHED.get(key) }.copied() {
        // The exclusion lookup waits until a watched file is hit.
        if is_excluded(tgid) {
            return Ok(());
        }
        flags |= flag::BY_INODE;
        if bits & watch::KILL != 0 {
            flags |= kill_current();
        }
    } else if open_flags & O_CREAT != 0
        && let Some((d, parent)) = dir_key(file)
        // SAFETY: as above.
        && unsafe { WATCHED_DIRS.get(parent) }.is_some()
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

    let mut entry = FILE_EVENTS
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

/// `SYS_ENTER[close]` (tail call from `raw_tp/sys_enter`): the close of a
/// descriptor opened for writing on a watched file is reported as a
/// [`FileEvent`] now, as the content is final.
#[raw_tracepoint]
pub fn enter_close(ctx: RawTracePointContext) -> u32 {
    if let Err(reason) = try_enter_close(&ctx) {
        count_loss(reason, LossFamily::File);
    }
    0
}
exported_as!(enter_close, programs::ENTER_CLOSE);

fn try_enter_close(ctx: &RawTracePointContext) -> Result<(), LossReason> {
    let fd = syscall::arg(ctx, 0);
    let (_, tgid) = task::ids();
    let slot = ((tgid as u64) << 32) | (fd & 0xffff_ffff);
    // SAFETY: plain-data map value, copied before removal.
    let Some(key) = (unsafe { WRITE_FDS.get(slot) }).copied() else {
        return Ok(());
    };
    let _ = WRITE_FDS.remove(slot);
    let Some(op) = scratch() else { return Ok(()) };
    inode_op(op, change::CLOSE_WRITE, flag::BY_INODE, key, fd);
    emit(op, 0)
}
