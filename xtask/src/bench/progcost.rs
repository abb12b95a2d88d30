//! Per-program cost from the kernel's BPF statistics: `run_time_ns` and
//! `run_cnt` of each program the agent holds, read from the agent's
//! `/proc/PID/fdinfo` (names from the kernel's program list through aya).
//! The kernel only counts while `kernel.bpf_stats_enabled` is 1, which
//! costs two clock reads per program run, so the bench turns it on only
//! for the profiled pass and puts the old value back.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
};

use anyhow::{Context as _, Result};
use serde::Serialize;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` while alive; the value found before on drop.
pub(super) struct StatsOn {
    old: String,
}

impl StatsOn {
    pub(super) fn enable() -> Result<Self> {
        let old = fs::read_to_string(SYSCTL)
            .with_context(|| format!("reading {SYSCTL}"))?
            .trim()
            .to_string();
        fs::write(SYSCTL, "1").with_context(|| format!("writing {SYSCTL}"))?;
        Ok(Self { old })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if let Err(e) = fs::write(SYSCTL, &self.old) {
            eprintln!("bench: could not restore {SYSCTL} to {}: {e}", self.old);
        }
    }
}

/// Cumulative (run time ns, runs) of each program id the process holds.
pub(super) type Snapshot = BTreeMap<u32, (u64, u64)>;

/// Reads every BPF program fd of process `pid`.
pub(super) fn snapshot(pid: u32) -> Result<Snapshot> {
    let mut out = Snapshot::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        // An fd closed between the listing and the read is not a program.
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(ns), Some(runs)) =
            (field("prog_id"), field("run_time_ns"), field("run_cnt"))
        {
            out.insert(id as u32, (ns, runs));
        }
    }
    Ok(out)
}

/// A name for each program: the tracepoint its link in process `pid`
/// attaches it to when there is one (program names are cut at 15 bytes,
/// which makes `sched_process_exec` and `sched_process_exit` one name),
/// else the kernel's name of the program.
pub(super) fn names(pid: u32) -> HashMap<u32, String> {
    let mut names: HashMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_string()))
        .collect();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return names;
    };
    for entry in dir.filter_map(Result::ok) {
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        if let (Some(_), Some(id), Some(tp)) =
            (field("link_type"), field("prog_id"), field("tp_name"))
            && let Ok(id) = id.parse::<u32>()
        {
            names.insert(id, tp.to_string());
        }
    }
    names
}

/// One program's cost over one workload.
#[derive(Serialize)]
pub(super) struct ProgramCost {
    pub(super) program: String,
    pub(super) id: u32,
    pub(super) runs: u64,
    pub(super) avg_ns: f64,
    pub(super) total_ms: f64,
}

/// What each program cost between `before` and `after`, the costliest
/// first; programs that did not run are left out.
pub(super) fn diff(
    before: &Snapshot,
    after: &Snapshot,
    names: &HashMap<u32, String>,
) -> Vec<ProgramCost> {
    let mut rows: Vec<ProgramCost> = after
        .iter()
        .filter_map(|(id, &(ns, runs))| {
            let (ns0, runs0) = before.get(id).copied().unwrap_or((0, 0));
            let (ns, runs) = (ns.saturating_sub(ns0), runs.saturating_sub(runs0));
            (runs > 0).then(|| ProgramCost {
                program: names.get(id).cloned().unwrap_or_else(|| "?".into()),
                id: *id,
                runs,
                avg_ns: ns as f64 / runs as f64,
                total_ms: ns as f64 / 1e6,
            })
        })
        .collect();
    rows.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    rows
}
