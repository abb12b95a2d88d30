//! Changes through a descriptor (`ftruncate`, `fchmod`, `fchown`): matched
//! at entry by the identity of the descriptor's file, held until the exit
//! says whether the call succeeded.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use reflex_wire::{
    file::{change, flag, watch},
    programs,
};

use super::{file_key, inode_op, kill_current, scratch};
use crate::{
    maps::{PENDING, WATCHED, is_excluded},
    syscall, task,
};

/// Holds a change made through descriptor argument 0 if its file is watched.
#[inline(always)]
fn on_fd_op(ctx: &RawTracePointContext, change: u32) {
    let (tid, tgid) = task::ids();
    if is_excluded(tgid) {
        return;
    }
    let fd = syscall::arg(ctx, 0);
    let Some(key) = task::fd_file(fd).and_then(file_key) else {
        return;
    };
    // SAFETY: plain u32 map value, copied.
    let Some(bits) = (unsafe { WATCHED.get(key) }).copied() else {
        return;
    };
    let Some(op) = scratch() else { return };
    let killed = if bits & watch::KILL != 0 {
        kill_current()
    } else {
        0
    };
    inode_op(op, change, flag::BY_INODE | killed, key, fd);
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the 1 KiB FileOp would be copied onto the 512-byte BPF stack"
    )]
    let _ = PENDING.insert(tid, &*op, 0);
}

/// `SYS_ENTER[ftruncate]` (tail call from `raw_tp/sys_enter`): holds a
/// truncation of a watched file for `exit_file_op`.
#[raw_tracepoint]
pub fn enter_ftruncate(ctx: RawTracePointContext) -> u32 {
    on_fd_op(&ctx, change::TRUNCATE);
    0
}
exported_as!(enter_ftruncate, programs::ENTER_FTRUNCATE);

/// `SYS_ENTER[fchmod]` (tail call from `raw_tp/sys_enter`): holds a mode
/// change of a watched file for `exit_file_op`.
#[raw_tracepoint]
pub fn enter_fchmod(ctx: RawTracePointContext) -> u32 {
    on_fd_op(&ctx, change::CHMOD);
    0
}
exported_as!(enter_fchmod, programs::ENTER_FCHMOD);

/// `SYS_ENTER[fchown]` (tail call from `raw_tp/sys_enter`): holds an owner
/// change of a watched file for `exit_file_op`.
#[raw_tracepoint]
pub fn enter_fchown(ctx: RawTracePointContext) -> u32 {
    on_fd_op(&ctx, change::CHOWN);
    0
}
exported_as!(enter_fchown, programs::ENTER_FCHOWN);
