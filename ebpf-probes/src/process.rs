//! Process family: exec, exit and fork, from the `sched` and `task` tracepoints.

use core::{
    ffi::c_void,
    mem::size_of,
    ptr::{addr_of_mut, write_volatile},
};

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_send_signal},
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use reflex_wire::{
    EventKind, ExecEvent, ExitEvent, ForkEvent, LossFamily, LossReason,
    process::{ARGS_MAX, CLONE_THREAD, EXE_MAX, exec_flag},
    programs,
};

use crate::{
    event::header,
    exe, exe_path,
    maps::{
        BPF_RB_FORCE_WAKEUP, EXCLUDED, EXEC_EVENTS, OFFSETS, count_loss, is_excluded, submit_quiet,
    },
    task,
};

/// The signal an in-kernel kill sends: it cannot be caught, blocked or
/// ignored, so the new image never runs.
const SIGKILL: u32 = 9;

/// `tp/sched/sched_process_exec`: kills the task with SIGKILL when the
/// executable the kernel loaded (`mm->exe_file`) is listed, by device and
/// inode in `EXEC_KILL` or by name in its directory in `EXEC_KILL_NAMES`,
/// before the new image runs a single instruction, then emits
/// an [`ExecEvent`] with the file name as spelled, the identity and path of
/// the loaded executable and the new image's argument block. No fallback
/// needed: this tracepoint exists on every kernel reflex targets.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    if let Err(reason) = try_sched_process_exec(&ctx) {
        count_loss(reason, LossFamily::Exec);
    }
    0
}
exported_as!(sched_process_exec, programs::SCHED_PROCESS_EXEC);

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), LossReason> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A thread other than the leader that execs takes the leader's pid, and
    // its own id is released without an exit of its own: its exclusion
    // moves with it, or the id would stay excluded for whoever gets it next.
    // SAFETY: the record holds a `pid_t old_pid` at this offset.
    let old_pid =
        unsafe { ctx.read_at::<u32>(OFFSETS.load().tp_exec_old_pid as usize) }.unwrap_or(tgid);
    if old_pid != tgid && EXCLUDED.get_ptr(old_pid).is_some() {
        let _ = EXCLUDED.remove(old_pid);
        let _ = EXCLUDED.insert(tgid, 1, 0);
    }
    if is_excluded(tgid) {
        return Ok(());
    }
    let mm = task::read::<u64>(task::current(), OFFSETS.load().task_mm).unwrap_or(0);
    let file = exe::exe_file(mm);
    let key = file.and_then(exe::identity);
    // Kill before anything can fail: a full ring buffer costs the report,
    // never the kill.
    let mut flags = 0;
    if let (Some(file), Some(key)) = (file, &key)
        && exe::kill_listed(file, key)
    {
        flags |= kill_current(tgid);
    }
    let (dev, ino) = key.map_or((0, 0), |k| (k.dev, k.ino));
    let mut entry = EXEC_EVENTS
        .reserve::<ExecEvent>(0)
        .ok_or(LossReason::RingbufFull)?;
    let event = entry.as_mut_ptr();
    let offsets = OFFSETS.load();
    // SAFETY: the tracepoint record holds a `__data_loc` u32 at this offset.
    let loc: u32 = unsafe { ctx.read_at(offsets.tp_exec_filename as usize) }.unwrap_or(0);
    let name = (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize);
    // SAFETY: `event` points at a reserved ring buffer slot sized for an
    // `ExecEvent`; each field is written through a raw pointer before submit
    // (the byte arrays only up to the lengths recorded beside them), and the
    // read helpers bound every copy by the size they are given.
    unsafe {
        let exe = addr_of_mut!((*event).exe);
        let copied = bpf_probe_read_kernel_str(exe.cast(), EXE_MAX as u32, name.cast());
        let exe_len = if copied > 0 { copied as u32 - 1 } else { 0 };
        addr_of_mut!((*event).exe_len).write(exe_len);

        let (path_len, cut) = match file {
            Some(file) => exe_path::write_path(file, addr_of_mut!((*event).path).cast()),
            None => (0, true),
        };
        if cut {
            flags |= exec_flag::PATH_CUT;
        }
        // Field by field, volatile: LLVM would turn a zeroed key into a
        // `memset` call, which the BPF target cannot make.
        write_volatile(addr_of_mut!((*event).path_len), path_len);
        write_volatile(addr_of_mut!((*event).file.dev), dev);
        write_volatile(addr_of_mut!((*event).file._pad), 0);
        write_volatile(addr_of_mut!((*event).file.ino), ino);
        write_volatile(addr_of_mut!((*event).flags), flags);
        write_volatile(addr_of_mut!((*event)._pad), 0);

        let (args_len, truncated) = read_args(mm, addr_of_mut!((*event).args).cast());
        addr_of_mut!((*event).args_len).write(args_len);
        addr_of_mut!((*event).args_truncated).write(truncated as u32);
        addr_of_mut!((*event).header).write(header(EventKind::Exec, size_of::<ExecEvent>()));
    }
    // Wakes the agent, unlike exit and fork (see `submit_quiet`). Forced:
    // the default wakes only a reader that has read everything before this
    // record, and the quiet exit and fork records are usually still there.
    entry.submit(BPF_RB_FORCE_WAKEUP);
    Ok(())
}

/// Sends SIGKILL to the current task and returns [`exec_flag::KILLED`] if it
/// went; never to init (pid 1), whatever a policy says. The agent and its
/// hooks never get here: they are excluded before the lookup.
#[inline(always)]
fn kill_current(tgid: u32) -> u32 {
    if tgid <= 1 {
        return 0;
    }
    // SAFETY: the helper signals the current task only.
    let sent = unsafe { bpf_send_signal(SIGKILL) };
    if sent == 0 { exec_flag::KILLED } else { 0 }
}

/// Copies the argument block (NUL-separated) of the current task's address
/// space `mm` into `dst`, which holds `ARGS_MAX` bytes; returns the bytes
/// copied and whether it was cut.
///
/// # Safety
/// `dst` must be valid for `ARGS_MAX` bytes of writes.
#[inline(always)]
unsafe fn read_args(mm: u64, dst: *mut u8) -> (u32, bool) {
    let offsets = OFFSETS.load();
    if mm == 0 {
        return (0, false);
    }
    // `arg_start` and `arg_end` sit side by side in `mm_struct`: one read.
    let (start, end) = if offsets.mm_arg_end == offsets.mm_arg_start + 8 {
        let [start, end] = task::read::<[u64; 2]>(mm, offsets.mm_arg_start).unwrap_or([0, 0]);
        (start, end)
    } else {
        (
            task::read::<u64>(mm, offsets.mm_arg_start).unwrap_or(0),
            task::read::<u64>(mm, offsets.mm_arg_end).unwrap_or(0),
        )
    };
    let mut len = end.saturating_sub(start) as u32;
    let truncated = len > ARGS_MAX as u32;
    if truncated {
        len = ARGS_MAX as u32;
    }
    // SAFETY: `len` is at most `ARGS_MAX`, the caller's bound on `dst`; the
    // helper fails cleanly on an unreadable user address.
    let read = unsafe { bpf_probe_read_user(dst.cast(), len, start as *const c_void) };
    if read == 0 {
        (len, truncated)
    } else {
        (0, false)
    }
}

/// `tp/sched/sched_process_exit`: emits an [`ExitEvent`] when the last thread
/// of a process exits (`group_dead`), or, on kernels without that field, when
/// the thread-group leader exits.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    if let Err(reason) = try_sched_process_exit(&ctx) {
        count_loss(reason, LossFamily::Exec);
    }
    0
}
exported_as!(sched_process_exit, programs::SCHED_PROCESS_EXIT);

fn try_sched_process_exit(ctx: &TracePointContext) -> Result<(), LossReason> {
    let offsets = OFFSETS.load();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let excluded = is_excluded(tgid);
    // Every exiting task leaves the exclusion map. Looked up before it is
    // removed: a delete takes the bucket's lock and nearly no task is
    // there; a leader's entry is the one just looked up.
    let listed = if tid == tgid {
        excluded
    } else {
        EXCLUDED.get_ptr(tid).is_some()
    };
    if listed {
        let _ = EXCLUDED.remove(tid);
    }
    if excluded {
        return Ok(());
    }
    let last = if offsets.tp_exit_group_dead != 0 {
        // SAFETY: the record holds a `bool group_dead` at this offset.
        unsafe { ctx.read_at::<u8>(offsets.tp_exit_group_dead as usize) }.unwrap_or(0) != 0
    } else {
        tid == tgid
    };
    if !last {
        return Ok(());
    }
    let mut entry = EXEC_EVENTS
        .reserve::<ExitEvent>(0)
        .ok_or(LossReason::RingbufFull)?;
    let code = task::read::<u32>(task::current(), offsets.task_exit_code).unwrap_or(0);
    entry.write(ExitEvent {
        header: header(EventKind::Exit, size_of::<ExitEvent>()),
        exit_code: code,
        _pad: 0,
    });
    submit_quiet(entry);
    Ok(())
}

/// `tp/sched/sched_process_fork`: a child of an excluded process (the agent's
/// hooks) is excluded too. Emits nothing.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    // The parent is the current task; exclusion is kept per process.
    if is_excluded((bpf_get_current_pid_tgid() >> 32) as u32) {
        let offset = OFFSETS.load().tp_fork_child_pid as usize;
        // SAFETY: the record holds a `pid_t child_pid` at this offset.
        if let Ok(child) = unsafe { ctx.read_at::<u32>(offset) } {
            let _ = EXCLUDED.insert(child, 1, 0);
        }
    }
    0
}
exported_as!(sched_process_fork, programs::SCHED_PROCESS_FORK);

/// `tp/task/task_newtask`: emits a [`ForkEvent`] when a task starts a new
/// process (not a thread), from the caller's context before the child runs,
/// so the agent knows the child's lineage before the child's first event.
/// No fallback needed: this tracepoint exists on every kernel reflex targets.
#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    if let Err(reason) = try_task_newtask(&ctx) {
        count_loss(reason, LossFamily::Exec);
    }
    0
}

fn try_task_newtask(ctx: &TracePointContext) -> Result<(), LossReason> {
    if is_excluded((bpf_get_current_pid_tgid() >> 32) as u32) {
        return Ok(());
    }
    let offsets = OFFSETS.load();
    // SAFETY: the record holds a `u64 clone_flags` and a `pid_t pid` at
    // these offsets, read from tracefs by the agent.
    let flags: u64 = unsafe { ctx.read_at(offsets.tp_newtask_clone_flags as usize) }
        .map_err(|_| LossReason::ReadFailed)?;
    if flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let child: u32 = unsafe { ctx.read_at(offsets.tp_newtask_pid as usize) }
        .map_err(|_| LossReason::ReadFailed)?;
    let mut entry = EXEC_EVENTS
        .reserve::<ForkEvent>(0)
        .ok_or(LossReason::RingbufFull)?;
    entry.write(ForkEvent {
        header: header(EventKind::Fork, size_of::<ForkEvent>()),
        child_pid: child,
        clone_flags: flags as u32,
    });
    submit_quiet(entry);
    Ok(())
}
exported_as!(task_newtask, programs::TASK_NEWTASK);
