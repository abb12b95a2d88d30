//! The maps of the exec probe's in-kernel kill (see `ebpf-probes/src/exe.rs`):
//! executables, by identity or by name in a directory, that the kernel
//! kills at exec.
use aya::maps::{HashMap, MapData};
use reflex_wire::{FileKey, maps, process::ExecName};

use super::{LoadError, Probes};

/// Room in each map when nothing else is asked for.
pub const DEFAULT_ENTRIES: u32 = 4096;

/// The three maps, taken together.
pub struct ExecKillMaps {
    /// `EXEC_KILL`: identity → `exec_kill` bits.
    pub ids: HashMap<MapData, FileKey, u32>,
    /// `EXEC_KILL_NAMES`: name (or start of one) in a directory → bits.
    pub names: HashMap<MapData, ExecName, u32>,
    /// `EXEC_KILL_DIRS`: directory → longest name it has in `EXEC_KILL_NAMES`.
    pub dirs: HashMap<MapData, FileKey, u32>,
}

impl Probes {
    /// Takes the maps of the in-kernel exec kill; only the first call succeeds.
    pub fn take_exec_kill_maps(&mut self) -> Result<ExecKillMaps, LoadError> {
        let mut take =
            |name: &'static str| self.ebpf.take_map(name).ok_or(LoadError::MissingMap(name));
        let (ids, names, dirs) = (
            take(maps::EXEC_KILL)?,
            take(maps::EXEC_KILL_NAMES)?,
            take(maps::EXEC_KILL_DIRS)?,
        );
        let map_err = |name| move |source| LoadError::Map { name, source };
        Ok(ExecKillMaps {
            ids: HashMap::try_from(ids).map_err(map_err(maps::EXEC_KILL))?,
            names: HashMap::try_from(names).map_err(map_err(maps::EXEC_KILL_NAMES))?,
            dirs: HashMap::try_from(dirs).map_err(map_err(maps::EXEC_KILL_DIRS))?,
        })
    }
}
