//! Loading the kernel object: resolve offsets, load, attach each probe, and
//! report what attached.
pub mod btf;
pub mod tracefs;

use std::path::Path;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint},
};
use reflex_wire::{FileKey, LossReason};

/// The compiled kernel programs, built by `build.rs`.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/reflex-probes"));

/// One tracepoint program and where it attaches.
struct Hook {
    program: &'static str,
    category: &'static str,
    /// Tracepoints it attaches to.
    points: &'static [&'static str],
    /// Whether the agent cannot work without it; others may be missing on
    /// some kernels and are reported.
    required: bool,
}

const fn hook(
    program: &'static str,
    category: &'static str,
    points: &'static [&'static str],
    required: bool,
) -> Hook {
    Hook {
        program,
        category,
        points,
        required,
    }
}

/// Syscalls whose change to a file is held at entry and sent at exit.
const FILE_OP_EXITS: &[&str] = &[
    "sys_exit_ftruncate",
    "sys_exit_fchmod",
    "sys_exit_fchown",
    "sys_exit_unlink",
    "sys_exit_unlinkat",
    "sys_exit_rename",
    "sys_exit_renameat",
    "sys_exit_renameat2",
    "sys_exit_link",
    "sys_exit_linkat",
    "sys_exit_symlink",
    "sys_exit_symlinkat",
    "sys_exit_truncate",
    "sys_exit_chmod",
    "sys_exit_fchmodat",
    "sys_exit_fchmodat2",
    "sys_exit_chown",
    "sys_exit_lchown",
    "sys_exit_fchownat",
];

/// Every tracepoint program. Exit handlers attach before the entry probes
/// that feed them, so no held change is ever left without its sender.
const HOOKS: &[Hook] = &[
    hook("sched_process_exec", "sched", &["sched_process_exec"], true),
    hook("sched_process_exit", "sched", &["sched_process_exit"], true),
    hook("sched_process_fork", "sched", &["sched_process_fork"], true),
    hook(
        "sys_exit_open_write",
        "syscalls",
        &[
            "sys_exit_openat",
            "sys_exit_open",
            "sys_exit_creat",
            "sys_exit_openat2",
        ],
        true,
    ),
    hook("sys_exit_file_op", "syscalls", FILE_OP_EXITS, true),
    hook("sys_enter_openat", "syscalls", &["sys_enter_openat"], true),
    hook("sys_enter_open", "syscalls", &["sys_enter_open"], false),
    hook("sys_enter_creat", "syscalls", &["sys_enter_creat"], false),
    hook(
        "sys_enter_openat2",
        "syscalls",
        &["sys_enter_openat2"],
        false,
    ),
    hook("sys_enter_close", "syscalls", &["sys_enter_close"], true),
    hook(
        "sys_enter_ftruncate",
        "syscalls",
        &["sys_enter_ftruncate"],
        true,
    ),
    hook("sys_enter_fchmod", "syscalls", &["sys_enter_fchmod"], true),
    hook("sys_enter_fchown", "syscalls", &["sys_enter_fchown"], true),
    hook("sys_enter_unlink", "syscalls", &["sys_enter_unlink"], false),
    hook(
        "sys_enter_unlinkat",
        "syscalls",
        &["sys_enter_unlinkat"],
        true,
    ),
    hook("sys_enter_rename", "syscalls", &["sys_enter_rename"], false),
    hook(
        "sys_enter_renameat",
        "syscalls",
        &["sys_enter_renameat"],
        false,
    ),
    hook(
        "sys_enter_renameat2",
        "syscalls",
        &["sys_enter_renameat2"],
        true,
    ),
    hook("sys_enter_link", "syscalls", &["sys_enter_link"], false),
    hook("sys_enter_linkat", "syscalls", &["sys_enter_linkat"], true),
    hook(
        "sys_enter_symlink",
        "syscalls",
        &["sys_enter_symlink"],
        false,
    ),
    hook(
        "sys_enter_symlinkat",
        "syscalls",
        &["sys_enter_symlinkat"],
        true,
    ),
    hook(
        "sys_enter_truncate",
        "syscalls",
        &["sys_enter_truncate"],
        true,
    ),
    hook("sys_enter_chmod", "syscalls", &["sys_enter_chmod"], false),
    hook(
        "sys_enter_fchmodat",
        "syscalls",
        &["sys_enter_fchmodat"],
        true,
    ),
    hook(
        "sys_enter_fchmodat2",
        "syscalls",
        &["sys_enter_fchmodat2"],
        false,
    ),
    hook("sys_enter_chown", "syscalls", &["sys_enter_chown"], false),
    hook("sys_enter_lchown", "syscalls", &["sys_enter_lchown"], false),
    hook(
        "sys_enter_fchownat",
        "syscalls",
        &["sys_enter_fchownat"],
        true,
    ),
];

/// Default size of the event ring buffer.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// Why the probes could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Kernel BTF could not give the offsets the probes need.
    #[error("resolving kernel struct offsets")]
    Btf(#[from] btf::BtfError),
    /// tracefs is unusable.
    #[error("preparing tracefs")]
    Tracefs(#[from] tracefs::TracefsError),
    /// The object was rejected as a whole.
    #[error("loading the reflex-probes object")]
    Object(#[source] EbpfError),
    /// The ring buffer size is not a power-of-two multiple of the page size.
    #[error("ring buffer size {0} is not a power of two of at least 4096 bytes")]
    RingSize(u32),
    /// The object lacks a program the agent expects (a build mismatch).
    #[error("program {0} missing from the reflex-probes object")]
    MissingProgram(&'static str),
    /// A program failed to load or attach.
    #[error("program {name}: {stage} failed")]
    Program {
        /// Program name.
        name: &'static str,
        /// `load` or `attach`.
        stage: &'static str,
        /// Underlying error.
        #[source]
        source: ProgramError,
    },
    /// A map is missing or of the wrong type.
    #[error("map {name}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Underlying error.
        #[source]
        source: MapError,
    },
    /// A map was already taken by an earlier call.
    #[error("map {0} missing from the reflex-probes object or already taken")]
    MissingMap(&'static str),
}

/// Settings for [`Probes::load`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Bytes of the event ring buffer (power of two, ≥ one page).
    pub ring_bytes: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: DEFAULT_RING_BYTES,
        }
    }
}

/// The loaded, attached probes. Dropping this detaches every program.
pub struct Probes {
    ebpf: Ebpf,
    attached: Vec<String>,
}

impl Probes {
    /// Resolves offsets, loads the object and attaches every probe.
    pub fn load(options: &LoadOptions) -> Result<Self, LoadError> {
        let ring = options.ring_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(LoadError::RingSize(ring));
        }
        let (trace_root, mounted) = tracefs::ensure_mounted()?;
        if mounted {
            tracing::info!(path = %trace_root.display(), "mounted tracefs");
        }
        let mut offsets = btf::resolve(Path::new(btf::VMLINUX_BTF))?;
        offsets.tp_exec_filename =
            tracefs::required_field_offset(&trace_root, "sched", "sched_process_exec", "filename")?;
        offsets.tp_exit_group_dead =
            tracefs::field_offset(&trace_root, "sched", "sched_process_exit", "group_dead")?
                .unwrap_or(0);
        offsets.tp_fork_child_pid = tracefs::required_field_offset(
            &trace_root,
            "sched",
            "sched_process_fork",
            "child_pid",
        )?;
        if offsets.tp_exit_group_dead == 0 {
            tracing::warn!(
                "sched_process_exit has no group_dead field; exits of thread-group leaders stand in for process exits"
            );
        }
        tracing::debug!(?offsets, "kernel offsets");

        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .map_max_entries("EVENTS", ring)
            .load(PROBES)
            .map_err(LoadError::Object)?;

        let mut attached = Vec::new();
        for hook in HOOKS {
            let name = hook.program;
            let program: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or(LoadError::MissingProgram(name))?
                .try_into()
                .map_err(|source| LoadError::Program {
                    name,
                    stage: "load",
                    source,
                })?;
            program.load().map_err(|source| LoadError::Program {
                name,
                stage: "load",
                source,
            })?;
            for point in hook.points {
                match program.attach(hook.category, point) {
                    Ok(_) => attached.push(format!("tracepoint/{}/{point}", hook.category)),
                    Err(source) if hook.required => {
                        return Err(LoadError::Program {
                            name,
                            stage: "attach",
                            source,
                        });
                    }
                    Err(err) => tracing::warn!(
                        program = name,
                        tracepoint = %format!("{}/{point}", hook.category),
                        %err,
                        "optional tracepoint not attached; changes made through it go unseen"
                    ),
                }
            }
        }
        Ok(Self { ebpf, attached })
    }

    /// Names of the hooks that are attached, e.g. `tracepoint/sched/sched_process_exec`.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// Stops reporting events of process `tgid` and of every process it
    /// starts from now on (the kernel follows forks).
    pub fn exclude(&mut self, tgid: u32) -> Result<(), LoadError> {
        let map = self
            .ebpf
            .map_mut("EXCLUDED")
            .ok_or(LoadError::MissingMap("EXCLUDED"))?;
        let mut excluded: HashMap<_, u32, u8> =
            HashMap::try_from(map).map_err(|source| LoadError::Map {
                name: "EXCLUDED",
                source,
            })?;
        excluded
            .insert(tgid, 1, 0)
            .map_err(|source| LoadError::Map {
                name: "EXCLUDED",
                source,
            })
    }

    /// Takes the maps the file watch list lives in; only the first call succeeds.
    pub fn take_watch_maps(&mut self) -> Result<WatchMaps, LoadError> {
        let mut take =
            |name: &'static str| self.ebpf.take_map(name).ok_or(LoadError::MissingMap(name));
        let (files, dirs, names) = (
            take("WATCHED")?,
            take("WATCHED_DIRS")?,
            take("WATCHED_NAMES")?,
        );
        let map_err = |name| move |source| LoadError::Map { name, source };
        Ok(WatchMaps {
            files: HashMap::try_from(files).map_err(map_err("WATCHED"))?,
            dirs: HashMap::try_from(dirs).map_err(map_err("WATCHED_DIRS"))?,
            names: HashMap::try_from(names).map_err(map_err("WATCHED_NAMES"))?,
        })
    }

    /// Takes the event ring buffer; only the first call succeeds.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(LoadError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| LoadError::Map {
            name: "EVENTS",
            source,
        })
    }

    /// Takes the kernel loss counters; only the first call succeeds.
    pub fn take_losses(&mut self) -> Result<KernelLosses, LoadError> {
        let map = self
            .ebpf
            .take_map("LOST")
            .ok_or(LoadError::MissingMap("LOST"))?;
        let map = PerCpuArray::try_from(map).map_err(|source| LoadError::Map {
            name: "LOST",
            source,
        })?;
        Ok(KernelLosses { map })
    }
}

/// The kernel side of the file watch list (see `ebpf-probes/src/maps.rs`).
pub struct WatchMaps {
    /// `WATCHED`: files by identity.
    pub files: HashMap<MapData, FileKey, u32>,
    /// `WATCHED_DIRS`: directories by identity.
    pub dirs: HashMap<MapData, FileKey, u32>,
    /// `WATCHED_NAMES`: last-component hashes.
    pub names: HashMap<MapData, u64, u32>,
}

/// Read access to the probes' per-CPU `LOST` counters.
pub struct KernelLosses {
    map: PerCpuArray<MapData, u64>,
}

impl KernelLosses {
    /// Events lost in the kernel so far, per reason, summed over CPUs.
    pub fn read(&self) -> Result<Vec<(LossReason, u64)>, MapError> {
        LossReason::ALL
            .iter()
            .map(|&reason| {
                let per_cpu = self.map.get(&(reason as u32), 0)?;
                Ok((reason, per_cpu.iter().sum()))
            })
            .collect()
    }
}
