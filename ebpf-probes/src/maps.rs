//! Maps shared by every probe family.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use reflex_wire::{
    FileKey, KernelOffsets, LOSS_SLOTS, LossFamily, LossReason, loss_slot,
    maps::{self, CONNECT_EVENTS_BYTES, EXEC_EVENTS_BYTES, FILE_EVENTS_BYTES},
    offsets,
};

use crate::file::FileOp;

// One ring buffer per family, so that a flood of one (a `connect()` loop,
// an exec storm) fills its own and cannot make another's events be lost.
// The agent may resize each at load.

/// The exec family: exec, exit and fork records.
#[map]
pub static EXEC_EVENTS: RingBuf = RingBuf::with_byte_size(EXEC_EVENTS_BYTES, 0);
exported_as!(EXEC_EVENTS, maps::EXEC_EVENTS);

// `bpf_ringbuf_query` and `bpf_ringbuf_submit` flags (uapi `linux/bpf.h`).
const BPF_RB_NO_WAKEUP: u64 = 1;
/// Wake the reader whatever it has read.
pub const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;

/// Share of `EXEC_EVENTS` (1/N) that may wait unannounced before a record
/// wakes the agent.
const EXEC_WAKE_SHARE: u64 = 8;

/// Submits an exit or fork record without waking the agent, which reads
/// this ring buffer on a short timer (`ring_buffers.exec_flush`), on every
/// exec record and whenever another family wakes it. A wake-up per record
/// cost more than everything else these probes do (a self-IPI and a remote
/// wake-up, each a VM exit on a virtual machine). Exec records still wake
/// the agent: a kill the kernel could not make (a full kill table, a
/// policy the kernel cannot judge) races the program. Once an eighth of
/// the ring buffer waits, every record wakes the agent, so a storm
/// between two timer ticks cannot fill it.
#[inline(always)]
pub fn submit_quiet<T>(entry: RingBufEntry<T>) {
    let waiting = EXEC_EVENTS.query(BPF_RB_AVAIL_DATA);
    let size = EXEC_EVENTS.query(BPF_RB_RING_SIZE);
    let flags = if waiting >= size / EXEC_WAKE_SHARE {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags);
}

/// The file family.
#[map]
pub static FILE_EVENTS: RingBuf = RingBuf::with_byte_size(FILE_EVENTS_BYTES, 0);
exported_as!(FILE_EVENTS, maps::FILE_EVENTS);

/// The connect family.
#[map]
pub static CONNECT_EVENTS: RingBuf = RingBuf::with_byte_size(CONNECT_EVENTS_BYTES, 0);
exported_as!(CONNECT_EVENTS, maps::CONNECT_EVENTS);

/// Events the kernel side could not deliver, per CPU, indexed by
/// [`loss_slot`] of reason and family.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_SLOTS, 0);
exported_as!(LOST, maps::LOST);

/// Events a filter kept in the kernel because no loaded policy could
/// match them, per CPU, indexed by [`LossFamily`].
#[map]
pub static FILTERED: PerCpuArray<u64> = PerCpuArray::with_max_entries(LossFamily::COUNT, 0);
exported_as!(FILTERED, maps::FILTERED);

/// Kernel struct offsets resolved by the agent from BTF before load.
#[unsafe(no_mangle)]
pub static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::ZERO);
exported_as!(OFFSETS, offsets::GLOBAL);

/// Tasks whose events are not reported: the agent itself and, through
/// `sched_process_fork`, everything it starts (its hooks). Keyed by task id;
/// entries leave when the task exits.
#[map]
pub static EXCLUDED: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);
exported_as!(EXCLUDED, maps::EXCLUDED);

/// Whether the task group `tgid` is excluded from reporting.
#[inline(always)]
pub fn is_excluded(tgid: u32) -> bool {
    EXCLUDED.get_ptr(tgid).is_some()
}

/// Counts one lost event of `family`.
#[inline(always)]
pub fn count_loss(reason: LossReason, family: LossFamily) {
    if let Some(slot) = LOST.get_ptr_mut(loss_slot(reason, family)) {
        // SAFETY: the pointer comes from a successful per-CPU map lookup, so it
        // is valid and only this CPU touches it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Counts one event of `family` that a filter kept in the kernel.
#[inline(always)]
pub fn count_filtered(family: LossFamily) {
    if let Some(slot) = FILTERED.get_ptr_mut(family as u32) {
        // SAFETY: as in `count_loss`.
        unsafe { *slot += 1 };
    }
}

/// Watched files by identity → `watch` bits. Filled by the policy compiler.
#[map]
pub static WATCHED: HashMap<FileKey, u32> = HashMap::with_max_entries(65_536, 0);
exported_as!(WATCHED, maps::WATCHED);

/// Directories whose new or unwatched files are reported (globs, uploads).
#[map]
pub static WATCHED_DIRS: HashMap<FileKey, u32> = HashMap::with_max_entries(16_384, 0);
exported_as!(WATCHED_DIRS, maps::WATCHED_DIRS);

/// FNV-1a hashes of the last path component of watched files: the cheap
/// filter for path-based calls (rename, unlink, chmod ...), which carry no
/// inode. The agent checks each hit against the real file.
#[map]
pub static WATCHED_NAMES: HashMap<u64, u32> = HashMap::with_max_entries(65_536, 0);
exported_as!(WATCHED_NAMES, maps::WATCHED_NAMES);

/// The open for writing in progress on this CPU: (thread id, flags). A
/// per-CPU slot costs a fraction of a hash update on this hot path; a thread
/// that moved to another CPU inside the call is caught at exit by reading
/// the opened file's mode instead.
#[map]
pub static OPEN_SLOT: PerCpuArray<OpenSlot> = PerCpuArray::with_max_entries(1, 0);
exported_as!(OPEN_SLOT, maps::OPEN_SLOT);

/// One [`OPEN_SLOT`] entry.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenSlot {
    /// Thread that entered the open; 0 when empty.
    pub tid: u32,
    /// Its open flags.
    pub flags: u32,
}

/// (tgid << 32 | fd) → file, for descriptors opened for writing on watched
/// files, so their close can be reported.
#[map]
pub static WRITE_FDS: LruHashMap<u64, FileKey> = LruHashMap::with_max_entries(65_536, 0);
exported_as!(WRITE_FDS, maps::WRITE_FDS);

/// Thread id → a change to a watched file, between syscall enter and exit.
#[map]
pub static PENDING: LruHashMap<u32, FileOp> = LruHashMap::with_max_entries(4_096, 0);
exported_as!(PENDING, maps::PENDING);

/// Per-CPU room to build a [`FileOp`] (too big for the BPF stack).
#[map]
pub static SCRATCH: PerCpuArray<FileOp> = PerCpuArray::with_max_entries(1, 0);
exported_as!(SCRATCH, maps::SCRATCH);
