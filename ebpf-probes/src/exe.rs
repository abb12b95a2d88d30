//! The executable a task runs, read from `mm->exe_file` after exec: its
//! identity (device, inode), and whether the agent asked for it to be
//! killed, by that identity or by its name in its directory.

use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel_str,
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use reflex_wire::{
    FileKey,
    file::{NAME_HASH_START, name_hash_step},
    process::{EXEC_NAME_MAX, ExecName, exec_kill},
};

use crate::{exe_path::peek, maps::OFFSETS, task};

/// Executables killed at exec, by identity → `exec_kill` bits. Filled by the
/// agent from the enforcing exec `kill` policies (globs expanded over the
/// files that exist), minus those whose kill fuse blew; sized at load.
#[map]
pub static EXEC_KILL: HashMap<FileKey, u32> = HashMap::with_max_entries(4096, 0);
exported_as!(EXEC_KILL, reflex_wire::maps::EXEC_KILL);

/// Names (exact, or a start such as `nc` for `nc*`) under which an
/// executable is killed in a directory, whatever its identity: a file
/// renamed into place and run at once is killed before the agent has taken
/// in its identity. Keyed by directory, length and hash of the bytes.
#[map]
pub static EXEC_KILL_NAMES: HashMap<ExecName, u32> = HashMap::with_max_entries(4096, 0);
exported_as!(EXEC_KILL_NAMES, reflex_wire::maps::EXEC_KILL_NAMES);

/// Directories with names in `EXEC_KILL_NAMES` → the longest of them, so
/// that an exec elsewhere costs one lookup.
#[map]
pub static EXEC_KILL_DIRS: HashMap<FileKey, u32> = HashMap::with_max_entries(4096, 0);
exported_as!(EXEC_KILL_DIRS, reflex_wire::maps::EXEC_KILL_DIRS);

/// Per-CPU room for the name being matched.
#[map]
static NAME_ROOM: PerCpuArray<[u8; EXEC_NAME_MAX]> = PerCpuArray::with_max_entries(1, 0);
exported_as!(NAME_ROOM, reflex_wire::maps::NAME_ROOM);

/// The `struct file` of the executable of the address space `mm` (the
/// current task's `mm`, 0 for none), if it has one.
#[inline(always)]
pub fn exe_file(mm: u64) -> Option<u64> {
    if mm == 0 {
        return None;
    }
    let file: u64 = task::read(mm, OFFSETS.load().mm_exe_file).ok()?;
    (file != 0).then_some(file)
}

/// Device and inode of an open file.
#[inline(always)]
pub fn identity(file: u64) -> Option<FileKey> {
    let inode: u64 = task::read(file, OFFSETS.load().file_inode).ok()?;
    task::inode_key(inode)
}

/// Whether the agent asked for the executable `file`, of identity `key`, to
/// be killed: by identity, or by its name in its directory.
#[inline(always)]
pub fn kill_listed(file: u64, key: &FileKey) -> bool {
    // SAFETY: plain u32 map value; only its bits are read.
    unsafe { EXEC_KILL.get(key) }.is_some_and(|bits| bits & exec_kill::KILL != 0)
        || name_listed(file)
}

/// Whether `file`'s name, in its directory, is in `EXEC_KILL_NAMES`: the
/// name's hash is extended byte by byte and each length looked up, up to
/// the longest name the directory has.
#[inline(always)]
fn name_listed(file: u64) -> bool {
    let off = OFFSETS.load();
    let dentry: u64 = peek(file, off.file_dentry);
    let parent: u64 = peek(dentry, off.dentry_parent);
    let Some(dir) = task::inode_key(peek(parent, off.dentry_inode)) else {
        return false;
    };
    // SAFETY: plain u32 map value, copied.
    let Some(longest) = (unsafe { EXEC_KILL_DIRS.get(dir) }).copied() else {
        return false;
    };
    let Some(room) = NAME_ROOM.get_ptr_mut(0) else {
        return false;
    };
    let name_len: u32 = peek(dentry, off.dentry_name_len);
    let name: u64 = peek(dentry, off.dentry_name);
    // SAFETY: the helper writes at most EXEC_NAME_MAX bytes into this CPU's
    // slot and stops at the name's NUL; it fails cleanly on a bad address.
    unsafe {
        bpf_probe_read_kernel_str(room.cast(), EXEC_NAME_MAX as u32, name as *const _);
    }
    let limit = name_len.min(longest);
    let mut hash = NAME_HASH_START;
    let mut i: u32 = 0;
    while i < EXEC_NAME_MAX as u32 {
        if i >= limit {
            break;
        }
        // SAFETY: this CPU's slot, read only here; `get` bounds the index
        // (an indexing panic would leave the program without an exit).
        let Some(&byte) = (unsafe { &*room }).get(i as usize) else {
            break;
        };
        hash = name_hash_step(hash, byte);
        let key = ExecName {
            dir,
            len: i + 1,
            _pad: 0,
            hash,
        };
        // SAFETY: plain u32 map value, copied.
        if let Some(bits) = (unsafe { EXEC_KILL_NAMES.get(key) }).copied()
            && (bits & exec_kill::PREFIX != 0
                || (bits & exec_kill::EXACT != 0 && i + 1 == name_len))
        {
            return true;
        }
        i += 1;
    }
    false
}
