//! The file family: changes to watched files, filtered in the kernel by
//! identity (device and inode) or, for path-based calls, by name hash.

use crate::EventHeader;

/// Bytes of a user path argument the probes copy.
pub const PATH_MAX: usize = 512;
/// Bytes of a dentry name the probes copy.
pub const NAME_MAX: usize = 256;

/// `FileEvent.change` values.
pub mod change {
    /// Opened for writing (`O_WRONLY`, `O_RDWR`, `O_TRUNC` or `O_CREAT`).
    pub const WRITE: u32 = 1;
    /// Closed after being opened for writing.
    pub const CLOSE_WRITE: u32 = 2;
    /// `truncate` / `ftruncate`.
    pub const TRUNCATE: u32 = 3;
    /// `rename*`, from or onto the path.
    pub const RENAME: u32 = 4;
    /// `unlink*`.
    pub const UNLINK: u32 = 5;
    /// `chmod` family.
    pub const CHMOD: u32 = 6;
    /// `chown` family.
    pub const CHOWN: u32 = 7;
    /// `link*` / `symlink*`.
    pub const LINK: u32 = 8;
}

/// `open` flags (x86-64 values), as in [`FileEvent::open_flags`].
pub mod open {
    /// Open for writing only.
    pub const O_WRONLY: u32 = 0o1;
    /// Open for reading and writing.
    pub const O_RDWR: u32 = 0o2;
    /// Create the file if it does not exist.
    pub const O_CREAT: u32 = 0o100;
    /// Truncate the file to length 0.
    pub const O_TRUNC: u32 = 0o1000;
    /// Any flag that lets an open change the file.
    pub const WRITES: u32 = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC;
}

/// `WATCHED*` map value bits.
pub mod watch {
    /// Report changes.
    pub const REPORT: u32 = 1;
    /// Kill the task in the syscall that touches the file.
    pub const KILL: u32 = 2;
}

/// `FileEvent.flags` bits.
pub mod flag {
    /// The file itself is watched (by device and inode).
    pub const BY_INODE: u32 = 1;
    /// The file's directory is watched (a new or unwatched file in it).
    pub const BY_DIR: u32 = 2;
    /// A path argument's last component matched a watched name.
    pub const BY_NAME: u32 = 4;
    /// The probe sent SIGKILL to the task.
    pub const KILLED: u32 = 8;
}

/// Identity of a file: its device and inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// `super_block.s_dev` (kernel `dev_t`: major << 20 | minor).
    pub dev: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Inode number.
    pub ino: u64,
}

const _: () = assert!(core::mem::size_of::<FileKey>() == 16);

/// A change to a watched file, sent when the syscall has returned.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileEvent {
    /// Common header; `kind` is `EventKind::File`.
    pub header: EventHeader,
    /// A [`change`] value.
    pub change: u32,
    /// [`flag`] bits.
    pub flags: u32,
    /// The file (for fd-based changes and opens).
    pub file: FileKey,
    /// Its directory (for opens).
    pub dir: FileKey,
    /// [`open`] flags, for [`change::WRITE`].
    pub open_flags: u32,
    /// The file descriptor, for opens, closes and fd-based changes; -1 otherwise.
    pub fd: i32,
    /// Syscall return value.
    pub ret: i64,
    /// Bytes of `name` in use.
    pub name_len: u32,
    /// Bytes of `path` in use.
    pub path_len: u32,
    /// Bytes of `path2` in use.
    pub path2_len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Dentry name of the opened file.
    pub name: [u8; NAME_MAX],
    /// First path argument (path-based calls), as the caller spelled it.
    pub path: [u8; PATH_MAX],
    /// Second path argument (rename and link targets).
    pub path2: [u8; PATH_MAX],
}

const _: () = assert!(
    core::mem::size_of::<FileEvent>() == 64 + 8 + 16 + 16 + 8 + 8 + 16 + NAME_MAX + 2 * PATH_MAX
);

/// FNV-1a 64-bit offset basis: the hash of an empty name.
pub const NAME_HASH_START: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
pub const NAME_HASH_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One FNV-1a step; the probes reset to [`NAME_HASH_START`] at each `/`.
#[inline(always)]
pub const fn name_hash_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(NAME_HASH_PRIME)
}

/// Hash of the last component of `path`, as the probes compute it.
pub fn name_hash(path: &[u8]) -> u64 {
    let mut hash = NAME_HASH_START;
    for &b in path {
        if b == 0 {
            break;
        }
        hash = if b == b'/' {
            NAME_HASH_START
        } else {
            name_hash_step(hash, b)
        };
    }
    hash
}
