//! The per-syscall handlers of the file and connect families: loaded, and
//! set in the `SYS_ENTER` / `SYS_EXIT` jump tables at their syscall's
//! number (x86-64), as `reflex_wire::syscalls` lists them.
use aya::{
    Ebpf,
    maps::{MapData, ProgramArray},
    programs::{ProgramError, ProgramFd, RawTracePoint},
};
use reflex_wire::{
    maps,
    syscalls::{FILE_SYSCALLS, NET_SYSCALLS, Syscall},
};

use super::{
    LoadError,
    attach::program_mut,
    error::{map_error, program_error},
};

/// Every syscall with a handler.
pub fn all() -> impl Iterator<Item = &'static Syscall> {
    FILE_SYSCALLS.iter().chain(&NET_SYSCALLS)
}

/// Loads the per-syscall handlers and fills the `SYS_ENTER` / `SYS_EXIT`
/// jump tables. The tables are returned to be kept: the kernel empties a
/// program array when its last user reference goes.
pub(super) fn load_handlers(ebpf: &mut Ebpf) -> Result<[ProgramArray<MapData>; 2], LoadError> {
    let table = |ebpf: &mut Ebpf, name: &'static str| -> Result<ProgramArray<MapData>, LoadError> {
        let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
        ProgramArray::try_from(map).map_err(map_error(name))
    };
    let mut enter = table(ebpf, maps::SYS_ENTER)?;
    let mut exit = table(ebpf, maps::SYS_EXIT)?;
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
        table.set(nr, fd, 0).map_err(map_error(name))
    };
    for syscall in all() {
        if let Some(handler) = syscall.exit {
            set(&mut exit, syscall.nr, &fd(ebpf, handler)?, maps::SYS_EXIT)?;
        }
    }
    for syscall in all() {
        if let Some(handler) = syscall.enter {
            set(&mut enter, syscall.nr, &fd(ebpf, handler)?, maps::SYS_ENTER)?;
        }
        tracing::debug!(syscall = syscall.name, nr = syscall.nr, "handler set");
    }
    Ok([enter, exit])
}

#[cfg(test)]
mod tests {
    use reflex_wire::syscalls::{SLOTS, handled, nr};

    #[test]
    fn the_kernel_filter_covers_exactly_the_handled_syscalls() {
        let ours: Vec<u32> = super::all().map(|s| s.nr).collect();
        assert!(ours.iter().all(|&n| handled(n as u64)));
        let filtered = (0..SLOTS).filter(|&n| handled(n as u64)).count();
        let mut distinct = ours.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ours.len(), "a syscall listed twice");
        assert_eq!(filtered, ours.len());
        assert!(!handled(1), "write is not handled");
        assert!(!handled(u64::from(SLOTS)));
        assert!(handled(u64::from(nr::OPENAT)));
    }
}
