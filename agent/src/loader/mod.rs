//! Loading the kernel object: resolve offsets, load, attach each probe, and
//! report what attached.
pub mod btf;
pub mod cgroup;
pub mod features;
pub mod syscalls;
pub mod tracefs;

use std::path::Path;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{
        HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf,
    },
    programs::{
        CgroupAttachMode, CgroupSockAddr, PerfEvent, ProgramError, RawTracePoint, TracePoint,
        cgroup_sock_addr::CgroupSockAddrLink,
        perf_event::{PerfEventConfig, PerfEventLink, PerfEventScope, SamplePolicy, SoftwareEvent},
        raw_trace_point::RawTracePointLink,
        trace_point::TracePointLink,
    },
};
use reflex_wire::{FileKey, LossFamily, LossReason, loss_slot};

/// The compiled kernel programs, built by `build.rs`.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/reflex-probes"));

/// Tracepoint programs: (program, category, tracepoint).
const TRACEPOINTS: [(&str, &str, &str); 4] = [
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sched_process_fork", "sched", "sched_process_fork"),
    ("task_newtask", "task", "task_newtask"),
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
    /// The cgroup v2 root could not be opened.
    #[error("opening the cgroup v2 root {path}")]
    Cgroup {
        /// Its path.
        path: std::path::PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The online CPUs could not be listed.
    #[error("listing online CPUs")]
    Cpus(#[source] std::io::Error),
    /// A map was already taken by an earlier call.
    #[error("map {0} missing from the reflex-probes object or already taken")]
    MissingMap(&'static str),
}

/// Settings for [`Probes::load`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Bytes of the event ring buffer (power of two, ≥ one page).
    pub ring_bytes: u32,
    /// CPU sampling frequency; `None` leaves the CPU sensor off.
    pub cpu_hz: Option<u64>,
}

/// Default CPU sampling frequency (Hz).
pub const DEFAULT_CPU_HZ: u64 = 99;

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: DEFAULT_RING_BYTES,
            cpu_hz: Some(DEFAULT_CPU_HZ),
        }
    }
}

/// An attachment the agent owns.
enum Link {
    TracePoint(#[allow(dead_code, reason = "held to keep the program attached")] TracePointLink),
    Perf(#[allow(dead_code, reason = "held to keep the program attached")] PerfEventLink),
    Cgroup(#[allow(dead_code, reason = "held to keep the program attached")] CgroupSockAddrLink),
    Raw(#[allow(dead_code, reason = "held to keep the program attached")] RawTracePointLink),
}

/// A program of type `T` by name.
fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(program_error(name, "load"))
}

fn program_error(name: &'static str, stage: &'static str) -> impl Fn(ProgramError) -> LoadError {
    move |source| LoadError::Program {
        name,
        stage,
        source,
    }
}

/// The loaded, attached probes. Dropping this detaches every program.
pub struct Probes {
    /// Owned so that they can be detached in parallel (see `Drop`).
    links: Vec<Link>,
    /// Kept open: the kernel empties a program array with no user reference.
    _jump_tables: [ProgramArray<MapData>; 2],
    ebpf: Ebpf,
    attached: Vec<String>,
    cgroup: Option<std::path::PathBuf>,
}

/// Threads that detach links at once.
const DETACH_THREADS: usize = 64;

impl Drop for Probes {
    /// Detaching a tracepoint waits for an RCU grace period in the kernel;
    /// one after another, fifty of them take seconds. Waiting in parallel
    /// shares the grace periods, so shutdown stays well under a second.
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        let per_thread = links.len().div_ceil(DETACH_THREADS).max(1);
        let mut chunks: Vec<Vec<Link>> = Vec::new();
        let mut links = links.into_iter().peekable();
        while links.peek().is_some() {
            chunks.push(links.by_ref().take(per_thread).collect());
        }
        std::thread::scope(|scope| {
            for chunk in chunks {
                scope.spawn(move || drop(chunk));
            }
        });
    }
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
        tracefs::record_offsets(&trace_root, &mut offsets)?;
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
        let mut links = Vec::new();
        for (name, category, point) in TRACEPOINTS {
            let program: &mut TracePoint = program_mut(&mut ebpf, name)?;
            program.load().map_err(program_error(name, "load"))?;
            let id = program
                .attach(category, point)
                .map_err(program_error(name, "attach"))?;
            links.push(Link::TracePoint(
                program
                    .take_link(id)
                    .map_err(program_error(name, "attach"))?,
            ));
            attached.push(format!("tracepoint/{category}/{point}"));
        }
        if let Some(hz) = options.cpu_hz {
            let program: &mut PerfEvent = program_mut(&mut ebpf, "cpu_sample")?;
            program
                .load()
                .map_err(program_error("cpu_sample", "load"))?;
            let cpus = aya::util::online_cpus().map_err(|(_, e)| LoadError::Cpus(e))?;
            for cpu in &cpus {
                let id = program
                    .attach(
                        PerfEventConfig::Software(SoftwareEvent::CpuClock),
                        PerfEventScope::AllProcessesOneCpu { cpu: *cpu },
                        SamplePolicy::Frequency(hz),
                        false,
                    )
                    .map_err(program_error("cpu_sample", "attach"))?;
                links.push(Link::Perf(
                    program
                        .take_link(id)
                        .map_err(program_error("cpu_sample", "attach"))?,
                ));
            }
            attached.push(format!("perf_event/cpu-clock@{hz}Hz x {} CPUs", cpus.len()));
        }
        let cgroup = match cgroup::root() {
            Some(root) => {
                let dir = std::fs::File::open(&root).map_err(|source| LoadError::Cgroup {
                    path: root.clone(),
                    source,
                })?;
                for name in ["connect4", "connect6"] {
                    let program: &mut CgroupSockAddr = program_mut(&mut ebpf, name)?;
                    program.load().map_err(program_error(name, "load"))?;
                    let id = program
                        .attach(&dir, CgroupAttachMode::Single)
                        .map_err(program_error(name, "attach"))?;
                    links.push(Link::Cgroup(
                        program
                            .take_link(id)
                            .map_err(program_error(name, "attach"))?,
                    ));
                    attached.push(format!("cgroup/{name}@{}", root.display()));
                }
                Some(root)
            }
            None => {
                tracing::warn!(
                    "no cgroup v2 hierarchy found: outbound connects are not seen and block policies cannot be enforced"
                );
                None
            }
        };
        let jump_tables = syscalls::load_handlers(&mut ebpf)?;
        // Dispatchers last, exit before entry: a change held at entry always
        // finds its exit handler.
        for (name, point) in [("sys_exit", "sys_exit"), ("sys_enter", "sys_enter")] {
            let program: &mut RawTracePoint = program_mut(&mut ebpf, name)?;
            program.load().map_err(program_error(name, "load"))?;
            let id = program
                .attach(point)
                .map_err(program_error(name, "attach"))?;
            links.push(Link::Raw(
                program
                    .take_link(id)
                    .map_err(program_error(name, "attach"))?,
            ));
            attached.push(format!("raw_tracepoint/{point}"));
        }
        Ok(Self {
            links,
            _jump_tables: jump_tables,
            ebpf,
            attached,
            cgroup,
        })
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

    /// The cgroup v2 root the connect hooks are attached to, if any.
    pub fn cgroup(&self) -> Option<&std::path::Path> {
        self.cgroup.as_deref()
    }

    /// Takes the block rule tries; only the first call succeeds.
    pub fn take_block_maps(&mut self) -> Result<BlockMaps, LoadError> {
        let v4 = self
            .ebpf
            .take_map("BLOCK4")
            .ok_or(LoadError::MissingMap("BLOCK4"))?;
        let v6 = self
            .ebpf
            .take_map("BLOCK6")
            .ok_or(LoadError::MissingMap("BLOCK6"))?;
        Ok(BlockMaps {
            v4: LpmTrie::try_from(v4).map_err(|source| LoadError::Map {
                name: "BLOCK4",
                source,
            })?,
            v6: LpmTrie::try_from(v6).map_err(|source| LoadError::Map {
                name: "BLOCK6",
                source,
            })?,
        })
    }

    /// Takes the CPU sample counters; only the first call succeeds.
    pub fn take_cpu_maps(&mut self) -> Result<CpuMaps, LoadError> {
        let samples = self
            .ebpf
            .take_map("CPU_SAMPLES")
            .ok_or(LoadError::MissingMap("CPU_SAMPLES"))?;
        let host = self
            .ebpf
            .take_map("CPU_HOST")
            .ok_or(LoadError::MissingMap("CPU_HOST"))?;
        Ok(CpuMaps {
            samples: PerCpuHashMap::try_from(samples).map_err(|source| LoadError::Map {
                name: "CPU_SAMPLES",
                source,
            })?,
            host: PerCpuArray::try_from(host).map_err(|source| LoadError::Map {
                name: "CPU_HOST",
                source,
            })?,
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

/// The connect hooks' block rules (see `ebpf-probes/src/net.rs`).
pub struct BlockMaps {
    /// `BLOCK4`: IPv4 prefixes, address as the kernel's u32 (network order bytes).
    pub v4: LpmTrie<MapData, u32, reflex_wire::BlockRule>,
    /// `BLOCK6`: IPv6 prefixes, address as four u32 words.
    pub v6: LpmTrie<MapData, [u32; 4], reflex_wire::BlockRule>,
}

/// The CPU sensor's counters (see `ebpf-probes/src/cpu.rs`).
pub struct CpuMaps {
    /// `CPU_SAMPLES`: samples per process, per CPU, cumulative.
    pub samples: PerCpuHashMap<MapData, u32, u64>,
    /// `CPU_HOST`: busy and all samples, per CPU, cumulative.
    pub host: PerCpuArray<MapData, u64>,
}

/// Read access to the probes' per-CPU `LOST` counters.
pub struct KernelLosses {
    map: PerCpuArray<MapData, u64>,
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
}
