//! The maps the rest of the agent reads and writes, handed out by name from
//! the loaded object (`reflex_wire::maps`), each at most once.
use aya::maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf};
use reflex_wire::{BlockRule, FileKey, LossFamily, LossReason, loss_slot, maps};

use super::{LoadError, Probes, error::map_error};

/// Entries the kernel's watch maps are made with at load: computed from
/// the policy set (the probes declare the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchRoom {
    /// `WATCHED`.
    pub files: u32,
    /// `WATCHED_DIRS`.
    pub dirs: u32,
    /// `WATCHED_NAMES`.
    pub names: u32,
}

impl Default for WatchRoom {
    fn default() -> Self {
        Self {
            files: 65_536,
            dirs: 16_384,
            names: 65_536,
        }
    }
}

/// The kernel side of the file watch list (see `ebpf-probes/src/maps.rs`).
pub struct WatchMaps {
    /// The entries each map was made with.
    pub room: WatchRoom,
    /// `WATCHED`: files by identity.
    pub files: HashMap<MapData, FileKey, u32>,
    /// `WATCHED_DIRS`: directories by identity.
    pub dirs: HashMap<MapData, FileKey, u32>,
    /// `WATCHED_NAMES`: last-component hashes.
    pub names: HashMap<MapData, u64, u32>,
}

/// The connect hooks' block rules (see `ebpf-probes/src/net.rs`).
pub struct BlockMaps {
    /// `BLOCK4`: IPv4 prefixes, address as the kernel's u32 (network order bytes).
    pub v4: LpmTrie<MapData, u32, BlockRule>,
    /// `BLOCK6`: IPv6 prefixes, address as four u32 words.
    pub v6: LpmTrie<MapData, [u32; 4], BlockRule>,
}

/// Which connects the probes send (see `ebpf-probes/src/interest.rs`).
pub struct InterestMaps {
    /// Prefixes each trie was made with.
    pub room: u32,
    /// `CONNECT_FILTER`: the `reflex_wire::net::interest` bits, one entry.
    pub filter: Array<MapData, u32>,
    /// `INTEREST4`: IPv4 prefixes wanted outbound, keyed as `BLOCK4`.
    pub v4: LpmTrie<MapData, u32, BlockRule>,
    /// `INTEREST6`: IPv6 prefixes wanted outbound, keyed as `BLOCK6`.
    pub v6: LpmTrie<MapData, [u32; 4], BlockRule>,
    /// `LOCAL_PORTS`: local ports wanted of accepted and listening sockets.
    pub local: Array<MapData, BlockRule>,
}

/// The ring buffers, one per family, in the order the sensor drains them.
pub struct EventRings {
    /// `EXEC_EVENTS`: drained first, so that every other record finds its
    /// process in the table.
    pub exec: RingBuf<MapData>,
    /// `FILE_EVENTS`.
    pub file: RingBuf<MapData>,
    /// `CONNECT_EVENTS`.
    pub connect: RingBuf<MapData>,
}

/// The CPU sensor's counters (see `ebpf-probes/src/cpu.rs`).
pub struct CpuMaps {
    /// `CPU_SAMPLES`: samples per process, per CPU, cumulative.
    pub samples: PerCpuHashMap<MapData, u32, u64>,
    /// `CPU_HOST`: per CPU, cumulative, in `reflex_wire::cpu` slots.
    pub host: PerCpuArray<MapData, u64>,
}

/// Read access to the probes' per-CPU `LOST` and `FILTERED` counters.
pub struct KernelLosses {
    map: PerCpuArray<MapData, u64>,
    filtered: PerCpuArray<MapData, u64>,
}

impl KernelLosses {
    /// Events lost in the kernel so far, per reason and family, summed over CPUs.
    pub fn read(&self) -> Result<Vec<(LossReason, LossFamily, u64)>, MapError> {
        LossReason::ALL
            .iter()
            .flat_map(|&reason| LossFamily::ALL.iter().map(move |&family| (reason, family)))
            .map(|(reason, family)| {
                let per_cpu = self.map.get(&loss_slot(reason, family), 0)?;
                Ok((reason, family, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Events kept in the kernel by a filter so far, per family, summed over CPUs.
    pub fn filtered(&self) -> Result<Vec<(LossFamily, u64)>, MapError> {
        LossFamily::ALL
            .iter()
            .map(|&family| {
                let per_cpu = self.filtered.get(&(family as u32), 0)?;
                Ok((family, per_cpu.iter().sum()))
            })
            .collect()
    }
}

impl Probes {
    /// Takes map `name` out of the object as a `T`.
    fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
        &mut self,
        name: &'static str,
    ) -> Result<T, LoadError> {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(LoadError::MissingMap(name))?;
        T::try_from(map).map_err(map_error(name))
    }

    /// Stops reporting events of process `tgid` and of every process it
    /// starts from now on (the kernel follows forks).
    pub fn exclude(&mut self, tgid: u32) -> Result<(), LoadError> {
        let name = maps::EXCLUDED;
        let map = self.ebpf.map_mut(name).ok_or(LoadError::MissingMap(name))?;
        let mut excluded: HashMap<_, u32, u8> = HashMap::try_from(map).map_err(map_error(name))?;
        excluded.insert(tgid, 1, 0).map_err(map_error(name))
    }

    /// Takes the maps the file watch list lives in; only the first call succeeds.
    pub fn take_watch_maps(&mut self) -> Result<WatchMaps, LoadError> {
        Ok(WatchMaps {
            room: self.watch_room,
            files: self.take(maps::WATCHED)?,
            dirs: self.take(maps::WATCHED_DIRS)?,
            names: self.take(maps::WATCHED_NAMES)?,
        })
    }

    /// Takes the block rule tries; only the first call succeeds.
    pub fn take_block_maps(&mut self) -> Result<BlockMaps, LoadError> {
        Ok(BlockMaps {
            v4: self.take(maps::BLOCK4)?,
            v6: self.take(maps::BLOCK6)?,
        })
    }

    /// Takes the CPU sample counters; only the first call succeeds.
    pub fn take_cpu_maps(&mut self) -> Result<CpuMaps, LoadError> {
        Ok(CpuMaps {
            samples: self.take(maps::CPU_SAMPLES)?,
            host: self.take(maps::CPU_HOST)?,
        })
    }

    /// Takes the connect filter's maps; only the first call succeeds.
    pub fn take_interest_maps(&mut self) -> Result<InterestMaps, LoadError> {
        Ok(InterestMaps {
            room: self.interest_room,
            filter: self.take(maps::CONNECT_FILTER)?,
            v4: self.take(maps::INTEREST4)?,
            v6: self.take(maps::INTEREST6)?,
            local: self.take(maps::LOCAL_PORTS)?,
        })
    }

    /// Takes the event ring buffers; only the first call succeeds.
    pub fn take_events(&mut self) -> Result<EventRings, LoadError> {
        Ok(EventRings {
            exec: self.take(maps::EXEC_EVENTS)?,
            file: self.take(maps::FILE_EVENTS)?,
            connect: self.take(maps::CONNECT_EVENTS)?,
        })
    }

    /// Takes the kernel loss and filter counters; only the first call succeeds.
    pub fn take_losses(&mut self) -> Result<KernelLosses, LoadError> {
        Ok(KernelLosses {
            map: self.take(maps::LOST)?,
            filtered: self.take(maps::FILTERED)?,
        })
    }
}
