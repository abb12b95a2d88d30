//! The path of an open file, walked up its dentries and mounts in the
//! kernel (there is no `bpf_d_path` for tracepoints), for the executable
//! the exec probe reports.

use core::{
    ffi::c_void,
    mem::{MaybeUninit, size_of},
    ptr::{addr_of, addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::{helpers::generated::bpf_probe_read_kernel, macros::map, maps::PerCpuArray};
use reflex_wire::process::EXE_PATH_MAX;

use crate::maps::OFFSETS;

/// Per-CPU room to build a path: how many dentries the climb noted, then
/// the bytes, root first. The byte room is twice the path's size so that
/// every masked write stays inside.
#[repr(C)]
pub struct PathRoom {
    count: u64,
    /// Never written: reads as 0 at run time and as an unknown number to
    /// the verifier (see [`climb`]).
    zero: u64,
    bytes: [u8; 2 * EXE_PATH_MAX],
}

/// This CPU's [`PathRoom`].
#[map]
static PATH_ROOM: PerCpuArray<PathRoom> = PerCpuArray::with_max_entries(1, 0);
exported_as!(PATH_ROOM, reflex_wire::maps::PATH_ROOM);

/// The dentries the climb noted, bottom up, per CPU. A map lookup by index
/// rather than an array indexed in place: the verifier then needs no exact
/// count, and checks the climb once per depth instead of once per way of
/// reaching it.
#[map]
static PATH_PARTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_STEPS, 0);
exported_as!(PATH_PARTS, reflex_wire::maps::PATH_PARTS);

/// Most steps up (path components plus mount crossings).
const MAX_STEPS: u32 = 48;
/// Mask keeping an offset below [`EXE_PATH_MAX`] (a power of two).
const HALF_MASK: u32 = EXE_PATH_MAX as u32 - 1;
/// Longest name a dentry holds (`NAME_MAX`).
const NAME_MASK: u32 = 0xff;

/// Writes the path of `file` into `dst` (`EXE_PATH_MAX` bytes) and returns
/// its length and whether it is incomplete (deeper than [`MAX_STEPS`],
/// longer than the room, or unreadable). The walk stops at the root of the
/// mount namespace the file is mounted in, like `d_path`.
///
/// Two loops, each with one way to go on, so that the verifier's work grows
/// with the depth and not with the ways through it: the first climbs and
/// notes each dentry, the second writes the names root first.
///
/// # Safety
/// `dst` must be valid for `EXE_PATH_MAX` bytes of writes.
#[inline(always)]
pub unsafe fn write_path(file: u64, dst: *mut u8) -> (u32, bool) {
    let Some(room) = PATH_ROOM.get_ptr_mut(0) else {
        return (0, true);
    };
    let mut cut = climb(file, room);
    // Read back from the map rather than carried in a register: the
    // verifier then checks the writing loop once for any count, not once
    // per count the climb can end with.
    // SAFETY: `room` is this CPU's map slot; nothing else runs on this CPU
    // while the program does.
    let count = unsafe { read_volatile(addr_of!((*room).count)) } as u32;
    // SAFETY: as above.
    let bytes = unsafe { addr_of_mut!((*room).bytes) } as *mut u8;
    let mut at: u32 = 0;
    let mut k: u32 = 0;
    while k < MAX_STEPS {
        if k >= count {
            break;
        }
        let dentry = PATH_PARTS.get(count - 1 - k).copied().unwrap_or(0);
        let (len, name) = name_of(dentry);
        let len = len & NAME_MASK;
        if at + 1 + len > EXE_PATH_MAX as u32 {
            cut = true;
            break;
        }
        // SAFETY: both offsets are masked below EXE_PATH_MAX and the copy
        // is at most NAME_MASK bytes, so every byte written lies inside the
        // 2 * EXE_PATH_MAX bytes of `bytes`; the helper fails cleanly on a
        // bad kernel address.
        unsafe {
            *bytes.add((at & HALF_MASK) as usize) = b'/';
            bpf_probe_read_kernel(
                bytes.add(((at + 1) & HALF_MASK) as usize).cast(),
                len,
                name as *const c_void,
            );
        }
        at += 1 + len;
        k += 1;
    }
    if at == 0 {
        // The root itself.
        // SAFETY: offset 0 of `bytes`.
        unsafe { *bytes = b'/' };
        at = 1;
    }
    // SAFETY: `bytes` holds 2 * EXE_PATH_MAX bytes and `dst` EXE_PATH_MAX
    // (the caller's contract).
    unsafe {
        bpf_probe_read_kernel(dst.cast(), EXE_PATH_MAX as u32, bytes as *const c_void);
    }
    (at, cut)
}

/// Climbs from `file`'s dentry to the root of its mount namespace, noting
/// each dentry that names a path component in `PATH_PARTS` and how many in
/// `room`; returns whether the climb stopped short of the root.
#[inline(always)]
fn climb(file: u64, room: *mut PathRoom) -> bool {
    // The count starts from a number the verifier cannot know: a known one
    // would make it track every count separately (a constant key into an
    // array map is made precise), once per way of reaching each depth.
    // SAFETY: `room` is this CPU's map slot.
    let start = unsafe { read_volatile(addr_of!((*room).zero)) } as u32;
    let (count, cut) = climb_steps(file, start);
    // SAFETY: `room` is this CPU's map slot.
    unsafe { write_volatile(addr_of_mut!((*room).count), count as u64) };
    cut
}

/// The loop of [`climb`]: returns how many dentries it noted and whether
/// it stopped short of the root.
#[inline(always)]
fn climb_steps(file: u64, start: u32) -> (u32, bool) {
    let off = OFFSETS.load();
    let mut dentry = peek::<u64>(file, off.file_dentry);
    let mut vfsmnt = peek::<u64>(file, off.file_vfsmount);
    let mut mnt = vfsmnt.wrapping_sub(off.mount_mnt as u64);
    let mut count: u32 = start;
    let mut root = peek::<u64>(vfsmnt, off.vfsmount_root);
    let mut step = 0;
    while step < MAX_STEPS {
        step += 1;
        let parent = peek::<u64>(dentry, off.dentry_parent);
        if dentry == root || dentry == parent {
            if dentry != root {
                // A dentry outside its mount's tree (detached): no path.
                return (count, true);
            }
            let up = peek::<u64>(mnt, off.mount_parent);
            if up == mnt || up == 0 {
                return (count, false);
            }
            dentry = peek::<u64>(mnt, off.mount_mountpoint);
            mnt = up;
            vfsmnt = up.wrapping_add(off.mount_mnt as u64);
            root = peek::<u64>(vfsmnt, off.vfsmount_root);
            continue;
        }
        if let Some(slot) = PATH_PARTS.get_ptr_mut(count) {
            // SAFETY: this CPU's slot of the map.
            unsafe { *slot = dentry };
        }
        count += 1;
        dentry = parent;
    }
    (count, true)
}

/// The length and address of `dentry`'s name. `d_name` is a `qstr`
/// (`u32 hash`, `u32 len`, `const char *name`): one read covers both where
/// the offsets say so, as on every kernel reflex targets.
#[inline(always)]
fn name_of(dentry: u64) -> (u32, u64) {
    let off = OFFSETS.load();
    if off.dentry_name == off.dentry_name_len + 4 {
        let [len, low, high] = peek::<[u32; 3]>(dentry, off.dentry_name_len);
        (len, u64::from(low) | (u64::from(high) << 32))
    } else {
        (
            peek::<u32>(dentry, off.dentry_name_len),
            peek::<u64>(dentry, off.dentry_name),
        )
    }
}

/// Reads a `T` at `base + offset` in kernel memory, or zeroes when that
/// fails (the helper clears its destination then). Not branching on the
/// outcome keeps the walk's loops cheap to verify: each iteration has one
/// way through, not one per read that might fail.
#[inline(always)]
pub fn peek<T: Copy>(base: u64, offset: u32) -> T {
    let mut value = MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes all size_of::<T>() bytes of `value`, the
    // read ones or zeroes, so it is initialised after the call.
    unsafe {
        bpf_probe_read_kernel(
            value.as_mut_ptr().cast(),
            size_of::<T>() as u32,
            base.wrapping_add(offset as u64) as *const c_void,
        );
        value.assume_init()
    }
}
