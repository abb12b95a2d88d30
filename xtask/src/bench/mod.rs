//! `cargo xtask bench`: reflex measured against no agent on this machine,
//! reported as ratios and latency percentiles. Never run by CI; never
//! passes or fails on time.
//!
//! One module per benchmark of the README's table (B1 `syscalls`, B2
//! `revert`, B3 `throughput`, B4 `scaling`, B5 `footprint`, B6 `kill`, B7
//! `sampling`, B8 `flood`, B9 `workloads` with `progcost`); this one prepares the policies, runs them in order and
//! writes the report (`report`).
mod flood;
mod footprint;
mod kill;
mod proc;
mod progcost;
mod report;
mod revert;
mod sampling;
mod scaling;
mod syscalls;
mod throughput;
mod workloads;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::sched::{CpuSet, sched_setaffinity};
use reflex_harness::{Launch, run_args, scrape};

/// Prints a progress line with the seconds since the benchmark started.
fn step(what: std::fmt::Arguments) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("bench [{:>4.0} s]: {what}", start.elapsed().as_secs_f64());
}

/// Sizes of one benchmark run.
struct Plan {
    runs: usize,
    loop_iterations: usize,
    reverts: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                runs: 5,
                loop_iterations: 100_000,
                reverts: 1_000,
            }
        } else {
            Self {
                runs: 7,
                loop_iterations: 1_000_000,
                reverts: 3_000,
            }
        }
    }
}

/// What every benchmark is given.
struct Bench<'a> {
    /// The agent binary (release build).
    bin: &'a Path,
    /// Scratch directory of this run.
    work: &'a Path,
    plan: Plan,
    quick: bool,
    /// CPUs of the machine.
    cpus: usize,
    /// Where the agent and the peer daemons run: CPU 1, or 0 on one CPU.
    peer_cpu: usize,
}

/// The policies and files the shared agent configuration watches.
struct Fixture {
    /// The shipped policies, 1000 watched files, a revert target and 100
    /// non-matching block rules.
    policies: PathBuf,
    /// The 1000 files under a monitor policy.
    watched: Vec<PathBuf>,
    /// The file under the revert policy.
    target: PathBuf,
    /// Where the syscall loops write: watched by nothing.
    loop_dir: PathBuf,
}

/// Runs every benchmark and writes `target/bench/report.json`; with
/// `only`, runs that one and prints its figures. `bin` replaces the
/// release build (to measure another version side by side).
pub fn run(root: &Path, quick: bool, only: Option<&str>, bin: Option<PathBuf>) -> Result<()> {
    if !crate::setup::is_root() {
        bail!("the benchmarks load eBPF programs and need root");
    }
    step(format_args!("starting"));
    let bin = bin.unwrap_or_else(|| root.join("target/release/reflex"));
    let work = tempdir()?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let bench = Bench {
        bin: &bin,
        work: &work,
        plan: Plan::new(quick),
        quick,
        cpus,
        peer_cpu: if cpus > 1 { 1 } else { 0 },
    };
    let result = match only {
        None => measure(&bench, root),
        Some("revert") => measure_revert(&bench, root),
        Some("flood") => flood::measure(&bench).map(|r| report::print_flood(&r)),
        Some("workloads") => measure_workloads(&bench, root),
        Some(other) => Err(anyhow::anyhow!(
            "no benchmark {other:?}; known: revert, flood, workloads"
        )),
    };
    let _ = fs::remove_dir_all(&work);
    result
}

/// B9 alone: printed, and written to `target/bench/workloads.{json,svg}`.
fn measure_workloads(bench: &Bench, root: &Path) -> Result<()> {
    let figures = workloads::measure(bench, root)?;
    report::print_workloads(&figures);
    let out = root.join("target/bench");
    fs::create_dir_all(&out)?;
    let path = out.join("workloads.json");
    fs::write(&path, serde_json::to_vec_pretty(&figures)?)?;
    let picture = out.join("workloads.svg");
    crate::chart::draw_workloads(&picture, &report::workload_bars(&figures))?;
    println!(
        "\nreport: {}\npicture: {}",
        path.display(),
        picture.display()
    );
    Ok(())
}

/// B2 alone: write -> restored, printed.
fn measure_revert(bench: &Bench, root: &Path) -> Result<()> {
    let fixture = prepare(bench.work, root)?;
    let restore = revert::measure(bench, &fixture)?;
    let show = |who: &str, samples: Vec<f64>| {
        let p = report::percentiles(samples);
        println!(
            "B2 write -> restored, {who}: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
            p.p50, p.p90, p.p99, p.max
        );
    };
    show(&bench.bin.display().to_string(), restore.reflex);
    if let Some(inotify) = restore.inotify {
        show("inotify restorer", inotify);
    }
    let flooded = flood::revert_under_flood(bench)?;
    show(
        &format!("{}, under an alerted connect flood", bench.bin.display()),
        flooded,
    );
    Ok(())
}

fn measure(bench: &Bench, root: &Path) -> Result<()> {
    let fixture = prepare(bench.work, root)?;
    let overhead = syscalls::measure(bench, &fixture)?;
    let restore = revert::measure(bench, &fixture)?;
    let delivery = revert::delivery(bench)?;
    let throughput = throughput::measure(bench)?;
    let scaling = scaling::measure(root)?;
    let footprint = footprint::measure(bench)?;
    let kill_bytes = kill::measure(bench)?;
    let cpu_sampling = sampling::measure(bench, &fixture.policies)?;
    let connect_flood = flood::measure(bench)?;
    let under_flood = flood::revert_under_flood(bench)?;
    let workloads = workloads::measure(bench, root)?;

    let report = report::Report {
        machine: proc::machine(),
        kernel: proc::kernel(),
        cpus: bench.cpus,
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        quick: bench.quick,
        overhead,
        revert_latency_us: report::percentiles(restore.reflex.clone()),
        inotify_restorer_latency_us: restore.inotify.clone().map(report::percentiles),
        revert_under_flood_us: report::percentiles(under_flood),
        event_delivery_us: delivery,
        throughput,
        policy_scaling: scaling,
        footprint,
        kill_bytes_written: kill_bytes,
        cpu_sampling,
        connect_flood,
        workloads,
    };
    report::print_table(&report);
    let out = root.join("target/bench");
    fs::create_dir_all(&out)?;
    let path = out.join("report.json");
    fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    let picture = out.join("report.svg");
    crate::chart::draw(
        &picture,
        &restore.reflex,
        restore.inotify.as_deref(),
        report.throughput.as_ref().map(|t| t.rounds.as_slice()),
        &report::workload_bars(&report.workloads),
    )?;
    println!(
        "\nreport: {}\npicture: {}",
        path.display(),
        picture.display()
    );
    Ok(())
}

/// Policies: the shipped ones, a monitor policy on 1000 extra watched
/// files, a revert policy on one file, and 100 block rules that match
/// nothing the benchmarks do.
fn prepare(work: &Path, root: &Path) -> Result<Fixture> {
    let policies = work.join("policies");
    fs::create_dir_all(&policies)?;
    for entry in fs::read_dir(root.join("policies"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "yaml") {
            fs::copy(&path, policies.join(path.file_name().unwrap_or_default()))?;
        }
    }
    let watched = work.join("watched");
    fs::create_dir_all(&watched)?;
    for i in 0..1000 {
        fs::write(
            watched.join(format!("w{i:04}.conf")),
            format!("watched {i}\n"),
        )?;
    }
    let target = work.join("managed/app.conf");
    fs::create_dir_all(target.parent().unwrap_or(work))?;
    fs::write(&target, "good content\n")?;
    let mut rules = String::new();
    for i in 0..100 {
        rules.push_str(&format!(
            "---\nname: bench-block-{i}\nmode: enforce\non:\n  connect: {{ direction: [outbound], remote: [\"198.18.{}.{}/32\"], ports: [{}] }}\ndo: [block]\n",
            i / 250,
            i % 250 + 1,
            10_000 + i
        ));
    }
    write_policy(&policies.join("bench-block.yaml"), &rules)?;
    write_policy(
        &policies.join("bench.yaml"),
        &format!(
            "name: bench-watched\nmode: monitor\non:\n  file: {{ paths: [\"{}/*.conf\"] }}\ndo: [alert]\n---\nname: bench-revert\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [revert]\n",
            watched.display(),
            target.display()
        ),
    )?;
    let loop_dir = work.join("unwatched");
    fs::create_dir_all(&loop_dir)?;
    Ok(Fixture {
        policies,
        watched: (0..1000)
            .map(|i| watched.join(format!("w{i:04}.conf")))
            .collect(),
        target,
        loop_dir,
    })
}

/// A `reflex run` started for a measurement, pinned to one CPU.
struct Agent(reflex_harness::Agent);

impl Agent {
    fn start(bin: &Path, policies: &Path, state: &Path, cpu: usize) -> Result<Self> {
        Self::start_with(bin, policies, state, cpu, &[])
    }

    fn start_with(
        bin: &Path,
        policies: &Path,
        state: &Path,
        cpu: usize,
        extra: &[&str],
    ) -> Result<Self> {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(cpu.to_string()).arg(bin);
        run_args(&mut command, policies, state).args(extra);
        let agent = Launch::new("reflex running")
            .discard_stdout()
            .start(&mut command)
            .context("starting reflex")?;
        Ok(Self(agent))
    }

    /// The agent's pid (`taskset` execs it).
    fn pid(&self) -> u32 {
        self.0.guard.pid()
    }

    /// (file events decoded, events lost) from the agent's `/metrics`.
    fn counters(&self) -> Result<(u64, u64)> {
        let metrics = scrape(self.0.metrics_addr(Duration::ZERO)?)?;
        Ok((
            metrics.sum("reflex_events_total", &[("family", "file")]) as u64,
            metrics.sum("reflex_events_lost_total", &[]) as u64,
        ))
    }

    /// SIGTERM, and the agent's exit (it detaches every probe first).
    fn stop(mut self) -> Result<()> {
        self.0.guard.terminate(Duration::from_secs(60))?;
        Ok(())
    }
}

fn pin(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).context("pinning the workload")?;
    Ok(())
}

fn write_policy(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("reflex-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}
