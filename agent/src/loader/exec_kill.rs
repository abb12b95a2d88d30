//! The `EXEC_KILL` map of the exec probe (see `ebpf-probes/src/exe.rs`):
//! executables, by identity, that the kernel kills at exec.
use aya::maps::{HashMap, MapData};
use reflex_wire::FileKey;

use super::{LoadError, Probes};

/// Room in `EXEC_KILL` when nothing else is asked for.
pub const DEFAULT_ENTRIES: u32 = 4096;

/// `EXEC_KILL`: identity → `exec_kill` bits.
pub type ExecKillMap = HashMap<MapData, FileKey, u32>;

impl Probes {
    /// Takes the map of executables killed at exec; only the first call succeeds.
    pub fn take_exec_kill_map(&mut self) -> Result<ExecKillMap, LoadError> {
        let map = self
            .ebpf
            .take_map("EXEC_KILL")
            .ok_or(LoadError::MissingMap("EXEC_KILL"))?;
        HashMap::try_from(map).map_err(|source| LoadError::Map {
            name: "EXEC_KILL",
            source,
        })
    }
}
