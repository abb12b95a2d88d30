//! Syscall dispatch for the file and connect families: the raw `sys_enter`
//! and `sys_exit` tracepoints tail-call a handler per syscall of interest
//! through the `SYS_ENTER` / `SYS_EXIT` jump tables (filled by the agent
//! from `reflex_wire::syscalls`), so attaching and detaching cost two links,
//! not fifty. Also the handlers' view of the syscall: its arguments and
//! return value.

use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::ProgramArray,
    programs::RawTracePointContext,
};
use reflex_wire::{maps, programs, syscalls};

use crate::task;

/// Handlers run at syscall entry, by syscall number.
#[map]
static SYS_ENTER: ProgramArray = ProgramArray::with_max_entries(syscalls::SLOTS, 0);
exported_as!(SYS_ENTER, maps::SYS_ENTER);

/// Handlers run at syscall exit, by syscall number.
#[map]
static SYS_EXIT: ProgramArray = ProgramArray::with_max_entries(syscalls::SLOTS, 0);
exported_as!(SYS_EXIT, maps::SYS_EXIT);

/// Offsets in x86-64 `struct pt_regs` (uapi, stable) of the syscall
/// arguments in order, and of the syscall number.
#[cfg(bpf_target_arch = "x86_64")]
const ARG_REGS: [u32; 6] = [112, 104, 96, 56, 72, 64];
#[cfg(bpf_target_arch = "x86_64")]
const ORIG_AX: u32 = 120;

/// `raw_tp/sys_enter`: hands the syscall to its handler in `SYS_ENTER`, if
/// it has one. Every other syscall costs a bit test. Emits nothing itself.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> u32 {
    let id: u64 = ctx.arg(1);
    if syscalls::handled(id) {
        // SAFETY: a tail call either jumps to a loaded handler of the same
        // program type or fails and returns here.
        unsafe { SYS_ENTER.tail_call(&ctx, id as u32) };
    }
    0
}
exported_as!(sys_enter, programs::SYS_ENTER);

/// `raw_tp/sys_exit`: as [`sys_enter`], at syscall exit, into `SYS_EXIT`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> u32 {
    let regs: u64 = ctx.arg(0);
    let id: u64 = task::read(regs, ORIG_AX).unwrap_or(u64::MAX);
    if syscalls::handled(id) {
        // SAFETY: as in `sys_enter`.
        unsafe { SYS_EXIT.tail_call(&ctx, id as u32) };
    }
    0
}
exported_as!(sys_exit, programs::SYS_EXIT);

/// Syscall return value, in an exit handler.
#[inline(always)]
pub fn ret(ctx: &RawTracePointContext) -> i64 {
    ctx.arg(1)
}

/// Reads syscall argument `n` from the saved user registers (still there
/// at exit: a syscall only changes the return register).
#[inline(always)]
pub fn arg(ctx: &RawTracePointContext, n: usize) -> u64 {
    let regs: u64 = ctx.arg(0);
    let Some(&offset) = ARG_REGS.get(n) else {
        return 0;
    };
    task::read(regs, offset).unwrap_or(0)
}
