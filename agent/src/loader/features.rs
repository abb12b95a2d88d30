//! What this kernel offers the probes: BTF, tracefs, program and map types,
//! cgroup v2, and the stronger hooks (LSM, fentry) other hosts may have.
//! Each answer says why, for `reflex doctor`.
use std::path::Path;

use aya::{
    maps::MapType,
    programs::{LsmAttachType, ProgramType},
    sys::{is_map_supported, is_program_supported},
};

use super::{btf, cgroup, tracefs};
use crate::logging::error_chain;

/// One answer: available or not, and what was seen.
#[derive(Clone, Debug)]
pub struct Feature {
    /// What was checked, e.g. `program type raw_tracepoint`.
    pub name: String,
    /// Whether reflex can use it here.
    pub available: bool,
    /// What was found, or why not.
    pub detail: String,
    /// Whether the agent needs it (the others are fallbacks or extras).
    pub required: bool,
}

impl Feature {
    fn new(name: impl Into<String>, required: bool, result: Result<String, String>) -> Self {
        let (available, detail) = match result {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        Self {
            name: name.into(),
            available,
            detail,
            required,
        }
    }
}

/// Program types: the ones the probes use, then the stronger hooks.
const PROGRAMS: [(&str, ProgramType, bool); 6] = [
    ("tracepoint", ProgramType::TracePoint, true),
    ("raw_tracepoint", ProgramType::RawTracePoint, true),
    ("perf_event", ProgramType::PerfEvent, true),
    ("cgroup_sock_addr", ProgramType::CgroupSockAddr, true),
    ("lsm", ProgramType::Lsm(LsmAttachType::Mac), false),
    ("fentry (tracing)", ProgramType::Tracing, false),
];

/// The `cgroup_sock_addr` hooks the connect family attaches at the cgroup
/// v2 root: connects, and datagrams sent without connecting.
pub const CGROUP_HOOKS: [&str; 4] = [
    reflex_wire::programs::CONNECT4,
    reflex_wire::programs::CONNECT6,
    reflex_wire::programs::SENDMSG4,
    reflex_wire::programs::SENDMSG6,
];

/// Map types the probes use.
const MAPS: [(&str, MapType); 6] = [
    ("ringbuf", MapType::RingBuf),
    ("hash", MapType::Hash),
    ("lru_hash", MapType::LruHash),
    ("percpu_array", MapType::PerCpuArray),
    ("lpm_trie", MapType::LpmTrie),
    ("prog_array", MapType::ProgramArray),
];

/// Every check, in the order a reader wants them.
pub fn probe() -> Vec<Feature> {
    let mut out = vec![
        Feature::new(
            "BTF",
            true,
            btf::resolve(Path::new(btf::VMLINUX_BTF))
                .map(|_| format!("{}: kernel struct offsets resolved", btf::VMLINUX_BTF))
                .map_err(|e| error_chain(&e)),
        ),
        Feature::new("tracefs", true, tracefs_state()),
    ];
    for (name, kind, required) in PROGRAMS {
        let result = match is_program_supported(kind) {
            Ok(true) => Ok("a test program loads".to_string()),
            Ok(false) => Err("this kernel does not know the program type".to_string()),
            Err(e) => Err(format!("a test program does not load: {}", error_chain(&e))),
        };
        out.push(Feature::new(
            format!("program type {name}"),
            required,
            result,
        ));
    }
    for (name, kind) in MAPS {
        let result = match is_map_supported(kind) {
            Ok(true) => Ok("a test map is created".to_string()),
            Ok(false) => Err("this kernel does not know the map type".to_string()),
            Err(e) => Err(format!("creating a test map failed: {}", error_chain(&e))),
        };
        out.push(Feature::new(format!("map type {name}"), true, result));
    }
    out.push(Feature::new(
        "cgroup v2",
        false,
        cgroup::root()
            .map(|root| {
                format!(
                    "mounted at {}: the {} hooks attach there, so connects and datagrams are seen and blocks enforced",
                    root.display(),
                    CGROUP_HOOKS.join(", ")
                )
            })
            .ok_or_else(|| {
                "no cgroup2 mount: connects and datagrams are not seen, block policies only report"
                    .to_string()
            }),
    ));
    out.push(Feature::new("BPF LSM", false, lsm_state()));
    out
}

fn tracefs_state() -> Result<String, String> {
    match tracefs::mounted() {
        Some(root) => Ok(format!("mounted at {}", root.display())),
        None => Ok(format!(
            "not mounted; the agent mounts it at {}",
            tracefs::CANDIDATES[0]
        )),
    }
}

fn lsm_state() -> Result<String, String> {
    const LSM_LIST: &str = "/sys/kernel/security/lsm";
    let list = match std::fs::read_to_string(LSM_LIST) {
        Ok(list) => list,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{LSM_LIST} is absent (securityfs not mounted?); the program type check above decides"
            ));
        }
        Err(e) => return Err(format!("cannot read {LSM_LIST}: {e}")),
    };
    let list = list.trim();
    if list.split(',').any(|l| l == "bpf") {
        Ok(format!("bpf is in the active LSM list ({list})"))
    } else {
        Err(format!("bpf is not in the active LSM list ({list})"))
    }
}
