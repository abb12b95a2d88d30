//! Syscalls (x86-64 numbers) the probes handle and the programs that handle
//! each, defined once so the kernel's quick filter, the probes and the
//! agent's jump tables cannot disagree.

use crate::programs;

/// x86-64 syscall numbers (`arch/x86/entry/syscalls/syscall_64.tbl`).
pub mod nr {
    /// `open`.
    pub const OPEN: u32 = 2;
    /// `close`.
    pub const CLOSE: u32 = 3;
    /// `accept`.
    pub const ACCEPT: u32 = 43;
    /// `listen`.
    pub const LISTEN: u32 = 50;
    /// `truncate`.
    pub const TRUNCATE: u32 = 76;
    /// `ftruncate`.
    pub const FTRUNCATE: u32 = 77;
    /// `rename`.
    pub const RENAME: u32 = 82;
    /// `creat`.
    pub const CREAT: u32 = 85;
    /// `link`.
    pub const LINK: u32 = 86;
    /// `unlink`.
    pub const UNLINK: u32 = 87;
    /// `symlink`.
    pub const SYMLINK: u32 = 88;
    /// `chmod`.
    pub const CHMOD: u32 = 90;
    /// `fchmod`.
    pub const FCHMOD: u32 = 91;
    /// `chown`.
    pub const CHOWN: u32 = 92;
    /// `fchown`.
    pub const FCHOWN: u32 = 93;
    /// `lchown`.
    pub const LCHOWN: u32 = 94;
    /// `openat`.
    pub const OPENAT: u32 = 257;
    /// `fchownat`.
    pub const FCHOWNAT: u32 = 260;
    /// `unlinkat`.
    pub const UNLINKAT: u32 = 263;
    /// `renameat`.
    pub const RENAMEAT: u32 = 264;
    /// `linkat`.
    pub const LINKAT: u32 = 265;
    /// `symlinkat`.
    pub const SYMLINKAT: u32 = 266;
    /// `fchmodat`.
    pub const FCHMODAT: u32 = 268;
    /// `accept4`.
    pub const ACCEPT4: u32 = 288;
    /// `renameat2`.
    pub const RENAMEAT2: u32 = 316;
    /// `openat2`.
    pub const OPENAT2: u32 = 437;
    /// `fchmodat2`.
    pub const FCHMODAT2: u32 = 452;
}

/// One handled syscall and the programs the jump tables run for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syscall {
    /// Name, for logs.
    pub name: &'static str,
    /// x86-64 syscall number: the slot in `SYS_ENTER` / `SYS_EXIT`.
    pub nr: u32,
    /// Program run at entry (a [`programs`] name), if any.
    pub enter: Option<&'static str>,
    /// Program run at exit (a [`programs`] name), if any.
    pub exit: Option<&'static str>,
}

const fn sc(
    name: &'static str,
    nr: u32,
    enter: &'static str,
    exit: Option<&'static str>,
) -> Syscall {
    Syscall {
        name,
        nr,
        enter: Some(enter),
        exit,
    }
}

const fn exit_only(name: &'static str, nr: u32, exit: &'static str) -> Syscall {
    Syscall {
        name,
        nr,
        enter: None,
        exit: Some(exit),
    }
}

const OPEN: Option<&str> = Some(programs::EXIT_OPEN);
const OP: Option<&str> = Some(programs::EXIT_FILE_OP);

/// Syscalls through which a watched file can change, by number.
pub const FILE_SYSCALLS: [Syscall; 24] = [
    sc("open", nr::OPEN, programs::ENTER_OPEN, OPEN),
    sc("close", nr::CLOSE, programs::ENTER_CLOSE, None),
    sc("truncate", nr::TRUNCATE, programs::ENTER_TRUNCATE, OP),
    sc("ftruncate", nr::FTRUNCATE, programs::ENTER_FTRUNCATE, OP),
    sc("rename", nr::RENAME, programs::ENTER_RENAME, OP),
    sc("creat", nr::CREAT, programs::ENTER_CREAT, OPEN),
    sc("link", nr::LINK, programs::ENTER_LINK, OP),
    sc("unlink", nr::UNLINK, programs::ENTER_UNLINK, OP),
    sc("symlink", nr::SYMLINK, programs::ENTER_SYMLINK, OP),
    sc("chmod", nr::CHMOD, programs::ENTER_CHMOD, OP),
    sc("fchmod", nr::FCHMOD, programs::ENTER_FCHMOD, OP),
    sc("chown", nr::CHOWN, programs::ENTER_CHOWN, OP),
    sc("fchown", nr::FCHOWN, programs::ENTER_FCHOWN, OP),
    sc("lchown", nr::LCHOWN, programs::ENTER_CHOWN, OP),
    sc("openat", nr::OPENAT, programs::ENTER_OPENAT, OPEN),
    sc("fchownat", nr::FCHOWNAT, programs::ENTER_FCHOWNAT, OP),
    sc("unlinkat", nr::UNLINKAT, programs::ENTER_UNLINKAT, OP),
    sc("renameat", nr::RENAMEAT, programs::ENTER_RENAMEAT, OP),
    sc("linkat", nr::LINKAT, programs::ENTER_LINKAT, OP),
    sc("symlinkat", nr::SYMLINKAT, programs::ENTER_SYMLINKAT, OP),
    sc("fchmodat", nr::FCHMODAT, programs::ENTER_FCHMODAT, OP),
    sc("renameat2", nr::RENAMEAT2, programs::ENTER_RENAMEAT, OP),
    sc("openat2", nr::OPENAT2, programs::ENTER_OPENAT2, OPEN),
    sc("fchmodat2", nr::FCHMODAT2, programs::ENTER_FCHMODAT, OP),
];

/// Syscalls the connect family reads at exit.
pub const NET_SYSCALLS: [Syscall; 3] = [
    exit_only("accept", nr::ACCEPT, programs::EXIT_ACCEPT),
    exit_only("listen", nr::LISTEN, programs::EXIT_LISTEN),
    exit_only("accept4", nr::ACCEPT4, programs::EXIT_ACCEPT),
];

/// Slots in the jump tables.
pub const SLOTS: u32 = 512;

/// Bit `n` set for each handled syscall `n`: a filter the probes test
/// without a map lookup or a tail call.
pub const HANDLED: [u64; (SLOTS / 64) as usize] = {
    let mut bits = [0u64; (SLOTS / 64) as usize];
    let mut i = 0;
    while i < FILE_SYSCALLS.len() + NET_SYSCALLS.len() {
        let n = if i < FILE_SYSCALLS.len() {
            FILE_SYSCALLS[i].nr
        } else {
            NET_SYSCALLS[i - FILE_SYSCALLS.len()].nr
        };
        assert!(n < SLOTS, "a syscall number beyond the jump tables");
        bits[(n / 64) as usize] |= 1 << (n % 64);
        i += 1;
    }
    bits
};

/// Whether syscall `id` has a handler.
#[inline(always)]
pub const fn handled(id: u64) -> bool {
    id < SLOTS as u64 && HANDLED[(id / 64) as usize] & (1 << (id % 64)) != 0
}
