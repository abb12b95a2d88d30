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
use reflex_wire::{KernelOffsets, offsets, programs};

use self::attach::Links;
pub use self::{
    error::LoadError,
    maps::{BlockMaps, CpuMaps, KernelLosses, WatchMaps, WatchRoom},
};

/// The compiled kernel programs, built by `build.rs`.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/reflex-probes"));

/// Default size of the event ring buffer.
pub const DEFAULT_RING_BYTES: u32 = reflex_wire::maps::EVENTS_BYTES;

/// Default CPU sampling frequency (Hz).
pub const DEFAULT_CPU_HZ: u64 = 99;

/// Settings for [`Probes::load`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Bytes of the event ring buffer (power of two, ≥ one page).
    pub ring_bytes: u32,
    /// CPU sampling frequency; `None` leaves the CPU sensor off.
    pub cpu_hz: Option<u64>,
    /// Room in each of the exec kill maps (identities, names, directories).
    pub exec_kill_entries: u32,
    /// Room in the file watch maps.
    pub watch_room: WatchRoom,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: DEFAULT_RING_BYTES,
            cpu_hz: Some(DEFAULT_CPU_HZ),
            exec_kill_entries: exec_kill::DEFAULT_ENTRIES,
            watch_room: WatchRoom::default(),
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
}

impl Probes {
    /// Resolves offsets, loads the object and attaches every probe.
    pub fn load(options: &LoadOptions) -> Result<Self, LoadError> {
        let ring = options.ring_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(LoadError::RingSize(ring));
        }
        let offsets = kernel_offsets()?;
        let watch = options.watch_room;
        let mut ebpf = EbpfLoader::new()
            .override_global(offsets::GLOBAL, &offsets, true)
            .map_max_entries(reflex_wire::maps::EVENTS, ring)
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
            .load(PROBES)
            .map_err(LoadError::Object)?;

        let mut links = Links::default();
        links.process(&mut ebpf)?;
        if let Some(hz) = options.cpu_hz {
            links.cpu(&mut ebpf, hz)?;
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
