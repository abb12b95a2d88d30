//! Attaching the probes per family, and detaching them all at once.
use std::path::Path;

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSockAddr, PerfEvent, ProgramError, RawTracePoint, TracePoint,
        cgroup_sock_addr::CgroupSockAddrLink,
        perf_event::{PerfEventConfig, PerfEventLink, PerfEventScope, SamplePolicy, SoftwareEvent},
        raw_trace_point::RawTracePointLink,
        trace_point::TracePointLink,
    },
};
use reflex_wire::programs;

use super::{LoadError, error::program_error};

/// Tracepoint programs, each named after its tracepoint: (category, name).
const TRACEPOINTS: [(&str, &str); 4] = [
    (programs::SCHED, programs::SCHED_PROCESS_EXEC),
    (programs::SCHED, programs::SCHED_PROCESS_EXIT),
    (programs::SCHED, programs::SCHED_PROCESS_FORK),
    (programs::TASK, programs::TASK_NEWTASK),
];

/// Threads that detach links at once.
const DETACH_THREADS: usize = 64;

/// An attachment the agent owns.
enum Link {
    TracePoint(#[allow(dead_code, reason = "held to keep the program attached")] TracePointLink),
    Perf(#[allow(dead_code, reason = "held to keep the program attached")] PerfEventLink),
    Cgroup(#[allow(dead_code, reason = "held to keep the program attached")] CgroupSockAddrLink),
    Raw(#[allow(dead_code, reason = "held to keep the program attached")] RawTracePointLink),
}

/// The attachments, and a name per hook for logs and metrics. Dropping this
/// detaches every program.
#[derive(Default)]
pub(super) struct Links {
    /// Owned so that they can be detached in parallel (see `Drop`).
    links: Vec<Link>,
    /// e.g. `tracepoint/sched/sched_process_exec`.
    pub(super) hooks: Vec<String>,
}

impl Drop for Links {
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

impl Links {
    /// The process family: exec, exit and fork tracepoints.
    pub(super) fn process(&mut self, ebpf: &mut Ebpf) -> Result<(), LoadError> {
        for (category, name) in TRACEPOINTS {
            let program: &mut TracePoint = program_mut(ebpf, name)?;
            program.load().map_err(program_error(name, "load"))?;
            let id = program
                .attach(category, name)
                .map_err(program_error(name, "attach"))?;
            self.links.push(Link::TracePoint(
                program
                    .take_link(id)
                    .map_err(program_error(name, "attach"))?,
            ));
            self.hooks.push(format!("tracepoint/{category}/{name}"));
        }
        Ok(())
    }

    /// The CPU family: the sampler on every online CPU's software clock, `hz`
    /// times a second.
    pub(super) fn cpu(&mut self, ebpf: &mut Ebpf, hz: u64) -> Result<(), LoadError> {
        let name = programs::CPU_SAMPLE;
        let program: &mut PerfEvent = program_mut(ebpf, name)?;
        program.load().map_err(program_error(name, "load"))?;
        let cpus = aya::util::online_cpus().map_err(|(_, e)| LoadError::Cpus(e))?;
        for cpu in &cpus {
            let id = program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu: *cpu },
                    SamplePolicy::Frequency(hz),
                    false,
                )
                .map_err(program_error(name, "attach"))?;
            self.links.push(Link::Perf(
                program
                    .take_link(id)
                    .map_err(program_error(name, "attach"))?,
            ));
        }
        self.hooks
            .push(format!("perf_event/cpu-clock@{hz}Hz x {} CPUs", cpus.len()));
        Ok(())
    }

    /// The connect family's cgroup hooks, on the cgroup v2 `root`.
    pub(super) fn connect(&mut self, ebpf: &mut Ebpf, root: &Path) -> Result<(), LoadError> {
        let dir = std::fs::File::open(root).map_err(|source| LoadError::Cgroup {
            path: root.to_owned(),
            source,
        })?;
        for name in super::features::CGROUP_HOOKS {
            let program: &mut CgroupSockAddr = program_mut(ebpf, name)?;
            program.load().map_err(program_error(name, "load"))?;
            let id = program
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(program_error(name, "attach"))?;
            self.links.push(Link::Cgroup(
                program
                    .take_link(id)
                    .map_err(program_error(name, "attach"))?,
            ));
            self.hooks.push(format!("cgroup/{name}@{}", root.display()));
        }
        Ok(())
    }

    /// The syscall dispatchers, each named after its raw tracepoint. Call
    /// after the jump tables are filled; exit is attached before entry, so a
    /// change held at entry always finds its exit handler.
    pub(super) fn dispatchers(&mut self, ebpf: &mut Ebpf) -> Result<(), LoadError> {
        for name in [programs::SYS_EXIT, programs::SYS_ENTER] {
            let program: &mut RawTracePoint = program_mut(ebpf, name)?;
            program.load().map_err(program_error(name, "load"))?;
            let id = program
                .attach(name)
                .map_err(program_error(name, "attach"))?;
            self.links.push(Link::Raw(
                program
                    .take_link(id)
                    .map_err(program_error(name, "attach"))?,
            ));
            self.hooks.push(format!("raw_tracepoint/{name}"));
        }
        Ok(())
    }
}

/// A program of type `T` by name.
pub(super) fn program_mut<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(program_error(name, "load"))
}
