//! Changes through a path (rename, unlink, link, truncate, chmod, chown):
//! the call carries only user strings, so the hash of each path's last
//! component is looked up in `WATCHED_NAMES` at entry and a hit is held
//! until the exit; the agent checks every hit against the real file.

use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::generated::bpf_probe_read_user_str, macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use reflex_wire::{
    file::{NAME_HASH_START, PATH_MAX, change, flag, name_hash_step},
    programs,
};

use super::{scratch, zero};
use crate::{
    maps::{PENDING, WATCHED_NAMES, is_excluded},
    syscall, task,
};

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
fn on_path_op(ctx: &RawTracePointContext, change: u32, first: usize, second: Option<usize>) {
    let (tid, tgid) = task::ids();
    if is_excluded(tgid) {
        return;
    }
    let Some(op) = scratch() else { return };
    let (len, hash) = read_path(syscall::arg(ctx, first), &mut op.path);
    op.path_len = len;
    op.path2_len = 0;
    let mut hash2 = NAME_HASH_START;
    if let Some(second) = second {
        let (len2, h2) = read_path(syscall::arg(ctx, second), &mut op.path2);
        op.path2_len = len2;
        hash2 = h2;
    }
    if !name_watched(hash) && !name_watched(hash2) {
        return;
    }
    op.change = change;
    op.flags = flag::BY_NAME;
    // SAFETY: fields of `op`, which is borrowed mutably. Volatile: LLVM
    // would merge adjacent zero stores into a memset, which the BPF target
    // cannot call.
    unsafe {
        zero(addr_of_mut!(op.file.dev));
        zero(addr_of_mut!(op.file._pad));
        zero(addr_of_mut!(op.file.ino));
    }
    op.fd = -1;
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the 1 KiB FileOp would be copied onto the 512-byte BPF stack"
    )]
    let _ = PENDING.insert(tid, &*op, 0);
}

/// Whether `hash` is a watched last component. Not inlined: the verifier
/// must see a scalar, not two map pointers that LLVM would OR together.
#[inline(never)]
fn name_watched(hash: u64) -> bool {
    // SAFETY: plain u32 map values; only presence is read.
    hash != NAME_HASH_START && unsafe { WATCHED_NAMES.get(hash) }.is_some()
}

/// A path-based handler `$name`, exported as `$program`: `$change` with the
/// path at argument `$first` and, for two-path calls, `$second`.
macro_rules! path_handler {
    ($name:ident, $program:expr, $change:expr, $first:expr, $second:expr) => {
        /// A `SYS_ENTER` handler (tail call from `raw_tp/sys_enter`): holds a
        /// path-based change of a watched name for `exit_file_op`.
        #[raw_tracepoint]
        pub fn $name(ctx: RawTracePointContext) -> u32 {
            on_path_op(&ctx, $change, $first, $second);
            0
        }
        exported_as!($name, $program);
    };
}

path_handler!(
    enter_unlink,
    programs::ENTER_UNLINK,
    change::UNLINK,
    0,
    None
);
path_handler!(
    enter_unlinkat,
    programs::ENTER_UNLINKAT,
    change::UNLINK,
    1,
    None
);
path_handler!(
    enter_rename,
    programs::ENTER_RENAME,
    change::RENAME,
    0,
    Some(1)
);
path_handler!(
    enter_renameat,
    programs::ENTER_RENAMEAT,
    change::RENAME,
    1,
    Some(3)
);
path_handler!(enter_link, programs::ENTER_LINK, change::LINK, 0, Some(1));
path_handler!(
    enter_linkat,
    programs::ENTER_LINKAT,
    change::LINK,
    1,
    Some(3)
);
path_handler!(
    enter_symlink,
    programs::ENTER_SYMLINK,
    change::LINK,
    0,
    Some(1)
);
path_handler!(
    enter_symlinkat,
    programs::ENTER_SYMLINKAT,
    change::LINK,
    0,
    Some(2)
);
path_handler!(
    enter_truncate,
    programs::ENTER_TRUNCATE,
    change::TRUNCATE,
    0,
    None
);
path_handler!(enter_chmod, programs::ENTER_CHMOD, change::CHMOD, 0, None);
path_handler!(
    enter_fchmodat,
    programs::ENTER_FCHMODAT,
    change::CHMOD,
    1,
    None
);
path_handler!(enter_chown, programs::ENTER_CHOWN, change::CHOWN, 0, None);
path_handler!(
    enter_fchownat,
    programs::ENTER_FCHOWNAT,
    change::CHOWN,
    1,
    None
);
