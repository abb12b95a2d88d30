//! Loading the kernel object: resolve offsets, load, attach each probe, and
//! report what attached. Maps and programs are found by their
//! `reflex_wire` names (`maps`, `programs`), which the probes are checked
//! against when they compile.
mod attach;
pub mod btf;
pub mod cgroup;
mod error;
pub mod exec_kill;
pub mod features;
mod maps;
#[cfg(test)]
mod object;
pub mod syscalls;
pub mod tracefs;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, ProgramArray},
};
use reflex_wire::{KernelOffsets, LossFamily, offsets, programs};

use self::attach::Links;
pub use self::{
    error::LoadError,
    maps::{BlockMaps, CpuMaps, EventRings, InterestMaps, KernelLosses, WatchMaps, WatchRoom},
};

/// The compiled kernel programs, built by `build.rs`.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/reflex-probes"));

/// Bytes of each family's ring buffer (each a power of two, ≥ one page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSizes {
    /// `EXEC_EVENTS`: exec, exit, fork.
    pub exec: u32,
    /// `FILE_EVENTS`.
    pub file: u32,
    /// `CONNECT_EVENTS`.
    pub connect: u32,
}

impl Default for RingSizes {
    fn default() -> Self {
        Self {
            exec: reflex_wire::maps::EXEC_EVENTS_BYTES,
            file: reflex_wire::maps::FILE_EVENTS_BYTES,
            connect: reflex_wire::maps::CONNECT_EVENTS_BYTES,
        }
    }
}

impl RingSizes {
    /// (family, map name, bytes) of every buffer.
    pub fn each(&self) -> [(LossFamily, &'static str, u32); 3] {
        use reflex_wire::maps;
        [
            (LossFamily::Exec, maps::EXEC_EVENTS, self.exec),
            (LossFamily::File, maps::FILE_EVENTS, self.file),
            (LossFamily::Connect, maps::CONNECT_EVENTS, self.connect),
        ]
    }

    /// Checks that every size is one the kernel takes.
    pub fn check(&self) -> Result<(), LoadError> {
        for (family, _, bytes) in self.each() {
            if !bytes.is_power_of_two() || bytes < 4096 {
                return Err(LoadError::RingSize {
                    family: family.label(),
                    bytes,
                });
            }
        }
        Ok(())
    }
}

/// Default CPU sampling frequency (Hz).
pub const DEFAULT_CPU_HZ: u64 = 99;

/// Prefixes per connect filter trie when the caller sizes none (`reflex
/// events` sends every connect and fills none).
pub const DEFAULT_INTEREST_ROOM: u32 = 4_096;

/// Settings for [`Probes::load`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Bytes of each family's ring buffer.
    pub rings: RingSizes,
    /// CPU sampling frequency; `None` leaves the CPU sensor off.
    pub cpu_hz: Option<u64>,
    /// Room in each of the exec kill maps (identities, names, directories).
    pub exec_kill_entries: u32,
    /// Room in the file watch maps.
    pub watch_room: WatchRoom,
    /// Prefixes each connect filter trie holds.
    pub interest_room: u32,
    /// Prefixes each block trie holds.
    pub block_room: u32,
    /// Send no connect until the agent fills the connect filter (`reflex
    /// run`); otherwise every connect is sent (`reflex events`).
    pub filter_connects: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            rings: RingSizes::default(),
            cpu_hz: Some(DEFAULT_CPU_HZ),
            exec_kill_entries: exec_kill::DEFAULT_ENTRIES,
            watch_room: WatchRoom::default(),
            interest_room: DEFAULT_INTEREST_ROOM,
            block_room: DEFAULT_INTEREST_ROOM,
            filter_connects: false,
        }
    }
}

/// The loaded, attached probes. Dropping this detaches every program.
pub struct Probes {
    /// First, so that programs are detached before the maps close.
    links: Links,
    /// Kept open: the kernel empties a program array with no user reference.
    _jump_tables: [ProgramArray<MapData>; 2],
    ebpf: Ebpf,
    cgroup: Option<PathBuf>,
    watch_room: WatchRoom,
    interest_room: u32,
}

impl Probes {
    /// Resolves offsets, loads the object and attaches every probe.
    pub fn load(options: &LoadOptions) -> Result<Self, LoadError> {
        options.rings.check()?;
        let offsets = kernel_offsets()?;
        let watch = options.watch_room;
        let interest_room = options.interest_room.max(1);
        let mut loader = EbpfLoader::new();
        for (_, name, bytes) in options.rings.each() {
            loader.map_max_entries(name, bytes);
        }
        let mut ebpf = loader
            .override_global(offsets::GLOBAL, &offsets, true)
            .map_max_entries(
                reflex_wire::maps::EXEC_KILL,
                options.exec_kill_entries.max(1),
            )
            .map_max_entries(
                reflex_wire::maps::EXEC_KILL_NAMES,
                options.exec_kill_entries.max(1),
            )
            .map_max_entries(
                reflex_wire::maps::EXEC_KILL_DIRS,
                options.exec_kill_entries.max(1),
            )
            .map_max_entries(reflex_wire::maps::WATCHED, watch.files.max(1))
            .map_max_entries(reflex_wire::maps::WATCHED_DIRS, watch.dirs.max(1))
            .map_max_entries(reflex_wire::maps::WATCHED_NAMES, watch.names.max(1))
            .map_max_entries(reflex_wire::maps::INTEREST4, interest_room)
            .map_max_entries(reflex_wire::maps::INTEREST6, interest_room)
            .map_max_entries(reflex_wire::maps::BLOCK4, options.block_room.max(1))
            .map_max_entries(reflex_wire::maps::BLOCK6, options.block_room.max(1))
            .load(PROBES)
            .map_err(LoadError::Object)?;

        let mut links = Links::default();
        links.process(&mut ebpf)?;
        if let Some(hz) = options.cpu_hz {
            links.cpu(&mut ebpf, hz)?;
        }
        if options.filter_connects {
            filter_all_connects(&mut ebpf)?;
        }
        let cgroup = cgroup::root();
        match &cgroup {
            Some(root) => links.connect(&mut ebpf, root)?,
            None => tracing::warn!(
                "no cgroup v2 hierarchy found: outbound connects and datagrams are not seen and block policies cannot be enforced"
            ),
        }
        let jump_tables = syscalls::load_handlers(&mut ebpf)?;
        // Dispatchers last: every handler they jump to is in place.
        links.dispatchers(&mut ebpf)?;
        Ok(Self {
            links,
            _jump_tables: jump_tables,
            ebpf,
            cgroup,
            watch_room: watch,
            interest_room,
        })
    }

    /// Names of the hooks that are attached, e.g. `tracepoint/sched/sched_process_exec`.
    pub fn attached(&self) -> &[String] {
        &self.links.hooks
    }

    /// The cgroup v2 root the connect hooks are attached to, if any.
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_deref()
    }

    /// Each loaded program's size as the kernel took it, by object name,
    /// sorted: what the probe cost guard compares with its baseline.
    pub fn program_sizes(&self) -> Vec<ProgramSize> {
        let mut sizes: Vec<ProgramSize> = self
            .ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some(ProgramSize {
                    name: name.to_string(),
                    verified: info.verified_instruction_count()?,
                    // Eight bytes per BPF instruction.
                    translated: info.size_translated()? / 8,
                })
            })
            .collect();
        sizes.sort_by(|a, b| a.name.cmp(&b.name));
        sizes
    }
}

/// A loaded program's instruction counts (see [`Probes::program_sizes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramSize {
    /// The program's name in the object.
    pub name: String,
    /// Instructions the verifier went through (every path it explored).
    pub verified: u32,
    /// Instructions after the kernel's rewrites, before the JIT.
    pub translated: u32,
}

/// Sets the connect filter to send nothing before the hooks attach, so
/// that a connect flood is not copied to the agent while it starts; the
/// agent puts in what its policies want before it says it runs.
fn filter_all_connects(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let name = reflex_wire::maps::CONNECT_FILTER;
    let map = ebpf.map_mut(name).ok_or(LoadError::MissingMap(name))?;
    let mut filter: aya::maps::Array<_, u32> =
        aya::maps::Array::try_from(map).map_err(error::map_error(name))?;
    filter
        .set(0, reflex_wire::net::interest::FILTERING, 0)
        .map_err(error::map_error(name))
}

/// The kernel struct offsets from BTF, and the tracepoint record offsets
/// from tracefs (mounting it if needed).
fn kernel_offsets() -> Result<KernelOffsets, LoadError> {
    let (trace_root, mounted) = tracefs::ensure_mounted()?;
    if mounted {
        tracing::info!(path = %trace_root.display(), "mounted tracefs");
    }
    let mut offsets = btf::resolve(Path::new(btf::VMLINUX_BTF))?;
    let sched = programs::SCHED;
    offsets.tp_exec_filename = tracefs::required_field_offset(
        &trace_root,
        sched,
        programs::SCHED_PROCESS_EXEC,
        "filename",
    )?;
    offsets.tp_exec_old_pid = tracefs::required_field_offset(
        &trace_root,
        sched,
        programs::SCHED_PROCESS_EXEC,
        "old_pid",
    )?;
    offsets.tp_exit_group_dead = tracefs::field_offset(
        &trace_root,
        sched,
        programs::SCHED_PROCESS_EXIT,
        "group_dead",
    )?
    .unwrap_or(0);
    offsets.tp_fork_child_pid = tracefs::required_field_offset(
        &trace_root,
        sched,
        programs::SCHED_PROCESS_FORK,
        "child_pid",
    )?;
    offsets.tp_newtask_pid =
        tracefs::required_field_offset(&trace_root, programs::TASK, programs::TASK_NEWTASK, "pid")?;
    offsets.tp_newtask_clone_flags = tracefs::required_field_offset(
        &trace_root,
        programs::TASK,
        programs::TASK_NEWTASK,
        "clone_flags",
    )?;
    if offsets.tp_exit_group_dead == 0 {
        tracing::warn!(
            "sched_process_exit has no group_dead field; exits of thread-group leaders stand in for process exits"
        );
    }
    tracing::debug!(?offsets, "kernel offsets");
    Ok(offsets)
}
