//! `reflex doctor`: what this host offers the probes, whether they load and
//! attach here, and whether the policies would load, each with the reason
//! when not. Exit 0 when the agent can run with these policies, 1 if not.
use std::{path::Path, process::ExitCode};

use crate::{
    cli::RunArgs,
    config::Settings,
    loader::{LoadOptions, Probes, features},
    logging::error_chain,
    policy::{self, model::Trigger, spec::Mode},
};

/// Prints the report.
pub fn doctor(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(args)?;
    let mut fatal = 0;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "kernel: Linux {} ({})",
        release.trim(),
        std::env::consts::ARCH
    );

    println!("\nkernel features");
    let found = features::probe();
    for feature in &found {
        let mark = match (feature.available, feature.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "no  ",
        };
        fatal += usize::from(!feature.available && feature.required);
        println!("  {mark}  {:<32} {}", feature.name, feature.detail);
    }
    let cgroup = found.iter().any(|f| f.name == "cgroup v2" && f.available);

    println!("\nprobes (loaded, attached and detached again)");
    let cpu_hz = (settings.cpu_hz > 0).then_some(settings.cpu_hz);
    let mut attached = Vec::new();
    match Probes::load(&LoadOptions {
        cpu_hz,
        ..LoadOptions::default()
    }) {
        Ok(probes) => {
            for hook in probes.attached() {
                println!("  ok    {hook}");
            }
            attached = probes.attached().to_vec();
            if cpu_hz.is_none() {
                println!("  off   perf_event/cpu-clock (cpu.hz is 0)");
            }
        }
        Err(err) => {
            fatal += 1;
            println!("  FAIL  {}", error_chain(&err));
        }
    }

    println!("\nways around enforcement, and whether this host lets reflex close them");
    bypasses(&attached);

    println!("\npolicies in {}", settings.policies.display());
    fatal += report_policies(&settings.policies, cgroup, cpu_hz.is_some());

    println!();
    if fatal == 0 {
        println!("reflex can run here with these policies");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{fatal} problem(s) stop reflex from running here as configured");
        Ok(ExitCode::FAILURE)
    }
}

/// Prints each policy and what it needs that is missing; returns 1 if the
/// set does not load.
fn report_policies(dir: &Path, cgroup: bool, cpu: bool) -> usize {
    let set = match policy::load_set(&[dir.to_owned()]) {
        Ok(set) => set,
        Err(errors) => {
            for error in &errors {
                println!("  FAIL  {error}");
            }
            println!("  the set would not load: {} error(s)", errors.len());
            return 1;
        }
    };
    for policy in set.policies() {
        let mode = match policy.mode {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        };
        let limit = match &policy.trigger {
            Trigger::Connect(_) if !cgroup => {
                Some("no cgroup v2: its connects and datagrams are not seen and nothing is blocked")
            }
            Trigger::Cpu { .. } if !cpu => Some("the CPU sensor is off (cpu.hz: 0)"),
            _ => None,
        };
        let mark = if limit.is_some() { "warn" } else { "ok  " };
        println!(
            "  {mark}  {:<32} {} {mode}{}",
            policy.name,
            policy.trigger.family(),
            limit.map(|l| format!(": {l}")).unwrap_or_default()
        );
    }
    println!("  {} policies would load", set.len());
    0
}

/// Prints each known class of bypass with whether the hooks that close it
/// work here (see policies/README.md for how each is seen).
fn bypasses(attached: &[String]) {
    let fanotify = crate::fanotify::FileMarks::new();
    let fanotify_detail = match &fanotify {
        Ok(_) if crate::fanotify::FileMarks::reports_writers() => "fanotify marks".to_string(),
        Ok(_) => "fanotify marks, without writers (no CAP_SYS_ADMIN): put back whoever made them"
            .to_string(),
        Err(err) => format!("fanotify unavailable: {}", error_chain(err)),
    };
    let has = |hook: &str| attached.iter().any(|a| a.starts_with(hook));
    let rows: [(&str, bool, String); 9] = [
        ("file: io_uring writes", fanotify.is_ok(), fanotify_detail.clone()),
        ("file: descriptor held and written late", fanotify.is_ok(), fanotify_detail.clone()),
        ("file: shared mapping, writer exits", fanotify.is_ok(), fanotify_detail.clone()),
        ("file: truncate/chmod via /proc/self/fd", fanotify.is_ok(), fanotify_detail.clone()),
        ("file: setxattr, ACLs, capabilities", fanotify.is_ok(), fanotify_detail.clone()),
        ("file: directory swapped or exchanged", fanotify.is_ok(), fanotify_detail),
        (
            "exec: program runs before the kill",
            has("tracepoint/sched/sched_process_exec"),
            "killed at sched_process_exec with bpf_send_signal".to_string(),
        ),
        (
            "connect: IPv4-mapped, datagrams",
            has("cgroup/connect6") && has("cgroup/sendmsg4") && has("cgroup/sendmsg6"),
            "cgroup connect4/6 and sendmsg4/6 hooks".to_string(),
        ),
        (
            "file: shared mapping, writer lives on",
            false,
            "not closed: page-fault writes raise no event; the change is seen when the mapping goes".to_string(),
        ),
    ];
    for (class, closed, how) in rows {
        let mark = if closed { "ok  " } else { "open" };
        println!("  {mark}  {class:<40} {how}");
    }
}
