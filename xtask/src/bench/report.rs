//! The report: every figure as JSON (`target/bench/report.json`) and as a
//! table on stdout.
use serde::Serialize;

use super::{
    flood::FloodCase, footprint::Footprint, sampling::SamplingCost, syscalls::Overhead,
    throughput::Throughput, workloads::Workloads,
};

/// Median, lowest and highest of a series of runs.
#[derive(Serialize)]
pub(super) struct Spread {
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) max: f64,
}

pub(super) fn spread(mut values: Vec<f64>) -> Spread {
    values.sort_by(f64::total_cmp);
    Spread {
        median: values[values.len() / 2],
        min: values[0],
        max: values[values.len() - 1],
    }
}

/// Percentiles of a latency distribution.
#[derive(Serialize)]
pub(super) struct Percentiles {
    pub(super) samples: usize,
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) max: f64,
}

pub(super) fn percentiles(mut latencies: Vec<f64>) -> Percentiles {
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    Percentiles {
        samples: latencies.len(),
        p50: pct(0.5),
        p90: pct(0.9),
        p99: pct(0.99),
        max: latencies[latencies.len() - 1],
    }
}

#[derive(Serialize)]
pub(super) struct Report {
    pub(super) machine: String,
    pub(super) kernel: String,
    pub(super) cpus: usize,
    pub(super) date: String,
    pub(super) quick: bool,
    pub(super) overhead: Vec<Overhead>,
    pub(super) revert_latency_us: Percentiles,
    pub(super) inotify_restorer_latency_us: Option<Percentiles>,
    /// Write -> restored while an alerted UDP connect flood runs.
    pub(super) revert_under_flood_us: Percentiles,
    pub(super) event_delivery_us: Vec<(String, Percentiles)>,
    pub(super) throughput: Option<Throughput>,
    pub(super) policy_scaling: Vec<serde_json::Value>,
    pub(super) footprint: Vec<Footprint>,
    pub(super) kill_bytes_written: Option<u64>,
    pub(super) cpu_sampling: Vec<SamplingCost>,
    pub(super) connect_flood: Vec<FloodCase>,
    pub(super) workloads: Workloads,
}

pub(super) fn print_table(r: &Report) {
    println!(
        "\nreflex benchmarks on {} ({} CPUs, Linux {})",
        r.machine, r.cpus, r.kernel
    );
    println!("\nB1 syscall overhead (ratio to no agent; median [min-max] of runs)");
    for o in &r.overhead {
        println!(
            "  {:<36} {:<14} {:>7.0} ns/iter -> {:>7.0} ns/iter   ratio {:.3} [{:.3}-{:.3}]",
            o.workload,
            o.placement,
            o.baseline_ns_per_iter.median,
            o.reflex_ns_per_iter.median,
            o.ratio.median,
            o.ratio.min,
            o.ratio.max
        );
    }
    let l = &r.revert_latency_us;
    println!(
        "\nB2 write -> content restored ({} changes): p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
        l.samples, l.p50, l.p90, l.p99, l.max
    );
    if let Some(l) = &r.inotify_restorer_latency_us {
        println!(
            "   inotify restorer (same method):    p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
            l.p50, l.p90, l.p99, l.max
        );
    }
    let l = &r.revert_under_flood_us;
    println!(
        "   under an alerted connect flood:    p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
        l.p50, l.p90, l.p99, l.max
    );
    for (who, l) in &r.event_delivery_us {
        println!(
            "   write -> event delivered, {who:<7} p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
            l.p50, l.p90, l.p99, l.max
        );
    }
    if let Some(t) = &r.throughput {
        println!(
            "\nB3 throughput: highest offered rate without loss {:.0} events/s; agent CPU {:.1} us/event",
            t.highest_rate_without_loss, t.agent_cpu_us_per_event
        );
        for (offered, delivered, lost) in &t.rounds {
            println!("   offered {offered:>9.0}/s  delivered {delivered:>9.0}/s  lost {lost}");
        }
    }
    println!("\nB4 evaluation cost per event");
    for row in &r.policy_scaling {
        println!(
            "   {:>6} policies: {} ns/event",
            row["policies"], row["ns_per_event"]
        );
    }
    println!("\nB5 idle footprint");
    for f in &r.footprint {
        println!(
            "   {:>6} policies: RSS {:.1} MiB (peak {:.1}), CPU {:.2}% of one core over {} s",
            f.policies, f.rss_mib, f.peak_rss_mib, f.cpu_percent_of_one_core, f.seconds
        );
    }
    if let Some(bytes) = r.kill_bytes_written {
        println!(
            "\nB6 bytes that reached a watched file after the open a kill policy answered: {bytes}"
        );
    }
    println!("\nB7 CPU sampling cost, idle agent (host busy, percent of one core)");
    for c in &r.cpu_sampling {
        println!(
            "  {:>4} Hz: host busy {:.2}% [{:.2}-{:.2}], cost over sensor off {:+.2}%",
            c.hz,
            c.host_busy_percent_of_one_core.median,
            c.host_busy_percent_of_one_core.min,
            c.host_busy_percent_of_one_core.max,
            c.cost_percent_of_one_core
        );
    }
    print_flood(&r.connect_flood);
    print_workloads(&r.workloads);
}

/// B9's tables: the workloads side by side, then each program's cost.
pub(super) fn print_workloads(w: &Workloads) {
    println!(
        "\nB9 whole workloads, median [min-max] of {} rounds; reflex on the shipped policies, auditd on a CIS-like rule set",
        w.runs
    );
    println!("  (the untar's tarball: {})", w.tar_source);
    if let Some(why) = &w.auditd_skipped {
        println!("  (auditd left out: {why})");
    }
    println!(
        "  {:<40} {:>9} {:>24} {:>24}",
        "workload", "no agent", "reflex", "auditd"
    );
    let ratio = |s: &Spread| format!("{:.3}x [{:.3}-{:.3}]", s.median, s.min, s.max);
    for r in &w.rows {
        println!(
            "  {:<40} {:>7.3} s {:>24} {:>24}",
            r.workload,
            r.none_s.median,
            ratio(&r.reflex_ratio),
            r.auditd_ratio.as_ref().map_or("-".into(), ratio)
        );
    }
    println!(
        "\nB9 per-program cost (reflex, one run of each workload with kernel.bpf_stats_enabled=1)"
    );
    for r in &w.rows {
        println!("  {} ({:.3} s profiled)", r.workload, r.profiled_s);
        println!(
            "    {:<22} {:>10} {:>12} {:>10}",
            "program", "runs", "avg ns/run", "total ms"
        );
        for p in &r.programs {
            println!(
                "    {:<22} {:>10} {:>12.0} {:>10.2}",
                p.program, p.runs, p.avg_ns, p.total_ms
            );
        }
        let total: f64 = r.programs.iter().map(|p| p.total_ms).sum();
        println!("    {:<22} {:>10} {:>12} {:>10.2}", "all", "", "", total);
    }
}

/// (workload, reflex ratio, auditd ratio) for the picture.
pub(super) fn workload_bars(w: &Workloads) -> Vec<(String, f64, Option<f64>)> {
    w.rows
        .iter()
        .map(|r| {
            (
                r.name.to_string(),
                r.reflex_ratio.median,
                r.auditd_ratio.as_ref().map(|a| a.median),
            )
        })
        .collect()
}

/// B8's table.
pub(super) fn print_flood(cases: &[FloodCase]) {
    println!(
        "\nB8 UDP connect flood, one core at full speed (agent on another), a watched file changed 20/s"
    );
    for c in cases {
        println!(
            "  connect policies {:<9} {:>9.0} connects/s  agent CPU {:>6.1} ns/connect  sent {:>9}  filtered {:>9}  connect lost {:>8}  file changes {:>4}  file events lost {}",
            c.policies,
            c.offered_per_s,
            c.agent_cpu_ns_per_connect,
            c.connect_events,
            c.filtered,
            c.connect_lost,
            c.file_changes,
            c.file_lost
        );
    }
}
