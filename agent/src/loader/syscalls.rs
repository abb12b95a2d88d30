//! The syscalls the file probes handle, by number, and their handlers in
//! the kernel object. Numbers are the x86-64 ABI.
use aya::{
    Ebpf,
    maps::{MapData, ProgramArray},
    programs::{ProgramError, ProgramFd, RawTracePoint},
};

use super::{LoadError, program_error, program_mut};

/// One syscall and the programs that handle its entry and exit.
pub struct Syscall {
    /// Name, for logs.
    pub name: &'static str,
    /// x86-64 syscall number.
    pub nr: u32,
    /// Program run at entry, if any.
    pub enter: Option<&'static str>,
    /// Program run at exit, if any.
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

const OPEN: Option<&str> = Some("exit_open");
const OP: Option<&str> = Some("exit_file_op");

/// Every syscall through which a watched file can change.
pub const FILE_SYSCALLS: &[Syscall] = &[
    sc("open", 2, "enter_open", OPEN),
    sc("close", 3, "enter_close", None),
    sc("truncate", 76, "enter_truncate", OP),
    sc("ftruncate", 77, "enter_ftruncate", OP),
    sc("rename", 82, "enter_rename", OP),
    sc("creat", 85, "enter_creat", OPEN),
    sc("link", 86, "enter_link", OP),
    sc("unlink", 87, "enter_unlink", OP),
    sc("symlink", 88, "enter_symlink", OP),
    sc("chmod", 90, "enter_chmod", OP),
    sc("fchmod", 91, "enter_fchmod", OP),
    sc("chown", 92, "enter_chown", OP),
    sc("fchown", 93, "enter_fchown", OP),
    sc("lchown", 94, "enter_chown", OP),
    sc("openat", 257, "enter_openat", OPEN),
    sc("fchownat", 260, "enter_fchownat", OP),
    sc("unlinkat", 263, "enter_unlinkat", OP),
    sc("renameat", 264, "enter_renameat", OP),
    sc("linkat", 265, "enter_linkat", OP),
    sc("symlinkat", 266, "enter_symlinkat", OP),
    sc("fchmodat", 268, "enter_fchmodat", OP),
    sc("renameat2", 316, "enter_renameat", OP),
    sc("openat2", 437, "enter_openat2", OPEN),
    sc("fchmodat2", 452, "enter_fchmodat", OP),
];

/// Syscalls the connect family reads at exit.
pub const NET_SYSCALLS: &[Syscall] = &[
    exit_only("accept", 43, "exit_accept"),
    exit_only("listen", 50, "exit_listen"),
    exit_only("accept4", 288, "exit_accept"),
];

/// Every syscall with a handler.
pub fn all() -> impl Iterator<Item = &'static Syscall> {
    FILE_SYSCALLS.iter().chain(NET_SYSCALLS)
}

/// Loads the per-syscall handlers and fills the `SYS_ENTER` / `SYS_EXIT`
/// jump tables. The tables are returned to be kept: the kernel empties a
/// program array when its last user reference goes.
pub(super) fn load_handlers(ebpf: &mut Ebpf) -> Result<[ProgramArray<MapData>; 2], LoadError> {
    let table = |ebpf: &mut Ebpf, name: &'static str| -> Result<ProgramArray<MapData>, LoadError> {
        let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
        ProgramArray::try_from(map).map_err(|source| LoadError::Map { name, source })
    };
    let mut enter = table(ebpf, "SYS_ENTER")?;
    let mut exit = table(ebpf, "SYS_EXIT")?;
    let mut names: Vec<&'static str> = all()
        .flat_map(|s| s.enter.into_iter().chain(s.exit))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in &names {
        let program: &mut RawTracePoint = program_mut(ebpf, name)?;
        program.load().map_err(program_error(name, "load"))?;
    }
    let fd = |ebpf: &Ebpf, name: &'static str| -> Result<ProgramFd, LoadError> {
        let program: &RawTracePoint = ebpf
            .program(name)
            .ok_or(LoadError::MissingProgram(name))?
            .try_into()
            .map_err(program_error(name, "load"))?;
        program
            .fd()
            .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
            .map_err(program_error(name, "load"))
    };
    let set = |table: &mut ProgramArray<MapData>, nr: u32, fd: &ProgramFd, name: &'static str| {
        table
            .set(nr, fd, 0)
            .map_err(|source| LoadError::Map { name, source })
    };
    for syscall in all() {
        if let Some(handler) = syscall.exit {
            set(&mut exit, syscall.nr, &fd(ebpf, handler)?, "SYS_EXIT")?;
        }
    }
    for syscall in all() {
        if let Some(handler) = syscall.enter {
            set(&mut enter, syscall.nr, &fd(ebpf, handler)?, "SYS_ENTER")?;
        }
        tracing::debug!(syscall = syscall.name, nr = syscall.nr, "handler set");
    }
    Ok([enter, exit])
}

#[cfg(test)]
mod tests {
    use super::FILE_SYSCALLS;

    #[test]
    fn the_kernel_filter_and_the_jump_tables_agree() {
        let mut ours: Vec<u32> = FILE_SYSCALLS.iter().map(|s| s.nr).collect();
        ours.sort_unstable();
        assert_eq!(ours, reflex_wire::syscalls::FILE_SYSCALLS);
        let net: Vec<u32> = super::NET_SYSCALLS.iter().map(|s| s.nr).collect();
        assert_eq!(net, reflex_wire::syscalls::NET_SYSCALLS);
        assert!(
            net.iter()
                .all(|&n| reflex_wire::syscalls::handled(n as u64))
        );
        assert!(
            ours.iter()
                .all(|&n| reflex_wire::syscalls::handled(n as u64))
        );
        assert!(!reflex_wire::syscalls::handled(1), "write is not handled");
    }
}
