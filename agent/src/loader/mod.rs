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
use reflex_wire::LossReason;

/// The compiled kernel programs, built by `build.rs`.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/reflex-probes"));

/// Tracepoint programs: (program name, category, tracepoint name).
const TRACEPOINTS: [(&str, &str, &str); 3] = [
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sched_process_fork", "sched", "sched_process_fork"),
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
        for (name, category, tracepoint) in TRACEPOINTS {
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
            program
                .attach(category, tracepoint)
                .map_err(|source| LoadError::Program {
                    name,
                    stage: "attach",
                    source,
                })?;
            attached.push(format!("tracepoint/{category}/{tracepoint}"));
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
