//! `cargo xtask bench`: reflex measured against no agent on this machine,
//! reported as ratios and latency percentiles. Never run by CI; never
//! passes or fails on time.
use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::peers;
use nix::sched::{CpuSet, sched_setaffinity};
use serde::Serialize;

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

#[derive(Serialize)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(mut values: Vec<f64>) -> Spread {
    values.sort_by(f64::total_cmp);
    Spread {
        median: values[values.len() / 2],
        min: values[0],
        max: values[values.len() - 1],
    }
}

#[derive(Serialize)]
struct Report {
    machine: String,
    kernel: String,
    cpus: usize,
    date: String,
    quick: bool,
    overhead: Vec<Overhead>,
    revert_latency_us: Percentiles,
    inotify_restorer_latency_us: Option<Percentiles>,
    event_delivery_us: Vec<(String, Percentiles)>,
    throughput: Option<Throughput>,
    policy_scaling: Vec<serde_json::Value>,
    footprint: Vec<Footprint>,
    kill_bytes_written: Option<u64>,
    cpu_sampling: Vec<SamplingCost>,
}

#[derive(Serialize)]
struct Throughput {
    /// (offered events/s, delivered events/s, lost) per round.
    rounds: Vec<(f64, f64, u64)>,
    highest_rate_without_loss: f64,
    agent_cpu_us_per_event: f64,
}

#[derive(Serialize)]
struct Footprint {
    policies: usize,
    seconds: u64,
    /// At the end of the idle period.
    rss_mib: f64,
    /// The highest since start (start-up parses kernel BTF).
    peak_rss_mib: f64,
    cpu_percent_of_one_core: f64,
}

#[derive(Serialize)]
struct SamplingCost {
    hz: u64,
    /// Host CPU while the idle agent runs, in percent of one core.
    host_busy_percent_of_one_core: Spread,
    /// The same minus the agent without the CPU sensor.
    cost_percent_of_one_core: f64,
}

#[derive(Serialize)]
struct Overhead {
    workload: &'static str,
    placement: &'static str,
    iterations: usize,
    baseline_ns_per_iter: Spread,
    reflex_ns_per_iter: Spread,
    ratio: Spread,
}

#[derive(Serialize)]
struct Percentiles {
    samples: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// Runs every benchmark and writes `target/bench/report.json`.
pub fn run(root: &Path, quick: bool) -> Result<()> {
    if !crate::setup::is_root() {
        bail!("the benchmarks load eBPF programs and need root");
    }
    let plan = Plan::new(quick);
    step(format_args!("starting"));
    let bin = root.join("target/release/reflex");
    let work = tempdir()?;
    let result = measure(&bin, &work, &plan, root, quick);
    let _ = fs::remove_dir_all(&work);
    result
}

fn measure(bin: &Path, work: &Path, plan: &Plan, root: &Path, quick: bool) -> Result<()> {
    // Policies: the shipped ones plus 1000 extra watched files.
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
    // A hundred block rules that match nothing the benchmark does.
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

    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut overhead = Vec::new();
    let placements: &[(&'static str, usize, usize)] = if cpus > 1 {
        &[("separate CPUs", 0, 1), ("same CPU", 0, 0)]
    } else {
        &[("same CPU", 0, 0)]
    };
    for &(placement, load_cpu, agent_cpu) in placements {
        pin(load_cpu)?;
        step(format_args!("B1 open/write/close loop, {placement}"));
        let mut base = Vec::new();
        let mut with = Vec::new();
        // Warm-up, then alternate so drift hits both sides alike.
        file_loop(&loop_dir, plan.loop_iterations / 4)?;
        for _ in 0..plan.runs {
            base.push(file_loop(&loop_dir, plan.loop_iterations)?);
            let agent = Agent::start(bin, &policies, &work.join("state"), agent_cpu)?;
            file_loop(&loop_dir, plan.loop_iterations / 10)?;
            with.push(file_loop(&loop_dir, plan.loop_iterations)?);
            agent.stop()?;
        }
        let ratio = base.iter().zip(&with).map(|(b, w)| w / b).collect();
        overhead.push(Overhead {
            workload: "open/write/close, unwatched files",
            placement,
            iterations: plan.loop_iterations,
            baseline_ns_per_iter: spread(base),
            reflex_ns_per_iter: spread(with),
            ratio: spread(ratio),
        });

        step(format_args!(
            "B1 connect/accept loop on loopback, {placement}"
        ));
        // A connect round costs about ten open/write/close iterations.
        let rounds = plan.loop_iterations / 10;
        let mut base = Vec::new();
        let mut with = Vec::new();
        connect_loop(rounds / 4)?;
        for _ in 0..plan.runs {
            base.push(connect_loop(rounds)?);
            let agent = Agent::start(bin, &policies, &work.join("state"), agent_cpu)?;
            connect_loop(rounds / 10)?;
            with.push(connect_loop(rounds)?);
            agent.stop()?;
        }
        let ratio = base.iter().zip(&with).map(|(b, w)| w / b).collect();
        overhead.push(Overhead {
            workload: "connect/accept/close on loopback",
            placement,
            iterations: rounds,
            baseline_ns_per_iter: spread(base),
            reflex_ns_per_iter: spread(with),
            ratio: spread(ratio),
        });
    }

    pin(0)?;
    let peer_cpu = if cpus > 1 { 1 } else { 0 };
    let watched_files: Vec<PathBuf> = (0..1000)
        .map(|i| watched.join(format!("w{i:04}.conf")))
        .collect();
    if peers::available("auditd") && peers::available("auditctl") {
        step(format_args!("B1 peer auditd with 1000 watch rules"));
        let (base, with) = peer_runs(plan, quick, &loop_dir, || {
            peers::Peer::auditd(&watched_files, work, peer_cpu)
        })?;
        overhead.push(peer_row(
            "auditd, 1000 watch rules",
            plan.loop_iterations,
            base,
            with,
        ));
    }
    if peers::available("bpftrace") {
        step(format_args!("B1 peer bpftrace with a path filter"));
        let (base, with) = peer_runs(plan, quick, &loop_dir, || peers::Peer::bpftrace(peer_cpu))?;
        overhead.push(peer_row(
            "bpftrace, openat path filter",
            plan.loop_iterations,
            base,
            with,
        ));
    }

    eprintln!(
        "bench: B2 write to a watched file -> restored, {} changes",
        plan.reverts
    );
    pin(0)?;
    let agent = Agent::start(
        bin,
        &policies,
        &work.join("state"),
        if cpus > 1 { 1 } else { 0 },
    )?;
    let latencies = restore_latencies(&target, plan.reverts);
    agent.stop()?;
    let latencies = latencies?;
    let revert = percentiles(latencies.clone());
    let reflex_latencies = latencies;

    let inotify = if peers::available("inotifywait") {
        step(format_args!("B2 peer inotify restorer"));
        let baseline = work.join("inotify-baseline");
        let victim = work.join("inotify-target.conf");
        fs::write(&baseline, "good content\n")?;
        fs::write(&victim, "good content\n")?;
        let peer = peers::Peer::inotify_restorer(&victim, &baseline, peer_cpu)?;
        let result = restore_latencies(&victim, plan.reverts);
        peer.stop()?;
        Some(result?)
    } else {
        None
    };
    let inotify_latencies = inotify.clone();
    let inotify = inotify.map(percentiles);

    step(format_args!(
        "B2 write -> event delivered (reflex alert log, auditd log)"
    ));
    let mut delivery = Vec::new();
    let samples = if quick { 200 } else { 1000 };
    delivery.push((
        "reflex".to_string(),
        percentiles(reflex_delivery(bin, work, samples, peer_cpu)?),
    ));
    if peers::available("auditd") && peers::available("auditctl") {
        delivery.push((
            "auditd".to_string(),
            percentiles(auditd_delivery(work, samples, peer_cpu)?),
        ));
    }

    step(format_args!(
        "B3 throughput, offered load doubled until anything is lost"
    ));
    let throughput = throughput(bin, &policies, work, quick)?;

    step(format_args!(
        "B4 evaluation cost per event with 10, 1 000 and 10 000 policies"
    ));
    let scaling = policy_scaling(root)?;

    step(format_args!(
        "B5 idle footprint with 10 and 10 000 policies"
    ));
    let mut footprint = Vec::new();
    for n in [10usize, 10_000] {
        footprint.push(idle_footprint(bin, work, n, if quick { 10 } else { 60 })?);
    }

    step(format_args!(
        "B6 bytes written after an open a kill policy answers"
    ));
    let kill_bytes = kill_bytes(bin, work)?;

    step(format_args!(
        "B7 CPU sampling cost at 0 (sensor off), 99 and 999 Hz"
    ));
    let mut sampling: Vec<(u64, Spread)> = Vec::new();
    for hz in [0u64, 99, 999] {
        let mut busy = Vec::new();
        for _ in 0..plan.runs.min(3) {
            let agent = Agent::start_with(
                bin,
                &policies,
                &work.join("state"),
                1,
                &["--cpu-hz", &hz.to_string()],
            )?;
            std::thread::sleep(Duration::from_secs(1));
            let before = host_busy_jiffies()?;
            let t = Instant::now();
            std::thread::sleep(Duration::from_secs(if quick { 3 } else { 10 }));
            let after = host_busy_jiffies()?;
            let secs = t.elapsed().as_secs_f64();
            agent.stop()?;
            let ticks = ticks_per_second();
            busy.push((after - before) as f64 / ticks / secs * 100.0);
        }
        sampling.push((hz, spread(busy)));
    }
    let off = sampling[0].1.median;
    let cpu_sampling = sampling
        .into_iter()
        .map(|(hz, busy)| SamplingCost {
            hz,
            cost_percent_of_one_core: busy.median - off,
            host_busy_percent_of_one_core: busy,
        })
        .collect();

    let report = Report {
        machine: fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_default(),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus,
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        quick,
        overhead,
        revert_latency_us: revert,
        inotify_restorer_latency_us: inotify,
        event_delivery_us: delivery,
        throughput,
        policy_scaling: scaling,
        footprint,
        kill_bytes_written: kill_bytes,
        cpu_sampling,
    };
    print_table(&report);
    let out = root.join("target/bench");
    fs::create_dir_all(&out)?;
    let path = out.join("report.json");
    fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    let picture = out.join("report.svg");
    crate::chart::draw(
        &picture,
        &reflex_latencies,
        inotify_latencies.as_deref(),
        report.throughput.as_ref().map(|t| t.rounds.as_slice()),
    )?;
    println!(
        "\nreport: {}\npicture: {}",
        path.display(),
        picture.display()
    );
    Ok(())
}

/// Busy jiffies of all CPUs so far (everything but idle and iowait).
fn host_busy_jiffies() -> Result<u64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ok(fields.iter().take(8).sum::<u64>() - idle)
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .map_or(100.0, |t| t as f64)
}

fn print_table(r: &Report) {
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
}

/// Nanoseconds per connect, accept and close on loopback.
fn connect_loop(rounds: usize) -> Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let start = Instant::now();
    for _ in 0..rounds {
        let client = std::net::TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        drop((client, server));
    }
    Ok(start.elapsed().as_nanos() as f64 / rounds.max(1) as f64)
}

/// Nanoseconds per iteration of open for writing, write 64 bytes at the
/// start, close, over 16 existing unwatched files (no truncation, so the
/// filesystem's own cost stays small and the probes' cost shows).
fn file_loop(dir: &Path, iterations: usize) -> Result<f64> {
    let payload = [b'x'; 64];
    let names: Vec<PathBuf> = (0..16).map(|i| dir.join(format!("f{i}"))).collect();
    for name in &names {
        fs::write(name, payload)?;
    }
    let start = Instant::now();
    for i in 0..iterations {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&names[i % names.len()])?;
        f.write_all(&payload)?;
    }
    Ok(start.elapsed().as_nanos() as f64 / iterations as f64)
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

/// A `reflex run` started for a measurement, pinned to one CPU.
struct Agent {
    child: Child,
    metrics: Option<std::net::SocketAddr>,
}

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
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(cpu.to_string())
            .arg(bin)
            .args(["run", "--policies"])
            .arg(policies)
            .arg("--state-dir")
            .arg(state)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting reflex")?;
        let stderr = child.stderr.take().context("reflex stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut metrics = None;
        let mut ready = false;
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(at) = line.find("http://") {
                let rest = &line[at + 7..];
                metrics = rest.split('/').next().and_then(|a| a.parse().ok());
            }
            if line.contains("reflex running") {
                ready = true;
                break;
            }
        }
        if !ready {
            let _ = child.kill();
            bail!("reflex did not start");
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, metrics })
    }

    /// (file events decoded, events lost) from the agent's `/metrics`.
    fn counters(&self) -> Result<(u64, u64)> {
        let body = http_get(self.metrics.context("no metrics address")?, "/metrics")?;
        let mut events = 0.0;
        let mut lost = 0.0;
        for line in body.lines() {
            let value = || {
                line.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("reflex_events_total{") && line.contains("family=\"file\"") {
                events += value();
            } else if line.starts_with("reflex_events_lost_total{") {
                lost += value();
            }
        }
        Ok((events as u64, lost as u64))
    }

    fn stop(mut self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        self.child.wait()?;
        Ok(())
    }
}

/// The file loop without and with a peer: alternating runs, each with its
/// own peer start; in a quick run the peer starts once (auditd removes its
/// 1000 rules one RCU grace period at a time, ~10 s per stop) and the
/// baseline runs come first.
fn peer_runs(
    plan: &Plan,
    quick: bool,
    loop_dir: &Path,
    start: impl Fn() -> Result<peers::Peer>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut base = Vec::new();
    let mut with = Vec::new();
    file_loop(loop_dir, plan.loop_iterations / 4)?;
    if quick {
        for _ in 0..plan.runs {
            base.push(file_loop(loop_dir, plan.loop_iterations)?);
        }
        let peer = start()?;
        file_loop(loop_dir, plan.loop_iterations / 10)?;
        for _ in 0..plan.runs {
            with.push(file_loop(loop_dir, plan.loop_iterations)?);
        }
        peer.stop()?;
    } else {
        for _ in 0..plan.runs {
            base.push(file_loop(loop_dir, plan.loop_iterations)?);
            let peer = start()?;
            file_loop(loop_dir, plan.loop_iterations / 10)?;
            with.push(file_loop(loop_dir, plan.loop_iterations)?);
            peer.stop()?;
        }
    }
    Ok((base, with))
}

fn peer_row(name: &'static str, iterations: usize, base: Vec<f64>, with: Vec<f64>) -> Overhead {
    let ratio = base.iter().zip(&with).map(|(b, w)| w / b).collect();
    Overhead {
        workload: name,
        placement: "peer",
        iterations,
        baseline_ns_per_iter: spread(base),
        reflex_ns_per_iter: spread(with),
        ratio: spread(ratio),
    }
}

fn percentiles(mut latencies: Vec<f64>) -> Percentiles {
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

/// Microseconds from writing `target` to seeing its good content back, `n` times.
fn restore_latencies(target: &Path, n: usize) -> Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        fs::write(target, format!("tampered {i}\n"))?;
        let written = Instant::now();
        let deadline = written + Duration::from_secs(5);
        let mut buf = Vec::with_capacity(64);
        loop {
            buf.clear();
            if fs::File::open(target)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .is_ok()
                && buf == b"good content\n"
            {
                latencies.push(written.elapsed().as_secs_f64() * 1e6);
                break;
            }
            if Instant::now() > deadline {
                bail!("change {i} was not restored within 5 s");
            }
            std::hint::spin_loop();
        }
    }
    Ok(latencies)
}

/// B3: file events offered at doubling rates to a monitor policy; the agent's
/// own counters say what was delivered and lost.
fn throughput(bin: &Path, shipped: &Path, work: &Path, quick: bool) -> Result<Option<Throughput>> {
    let dir = work.join("throughput");
    fs::create_dir_all(&dir)?;
    let policies = work.join("throughput-policies");
    fs::create_dir_all(&policies)?;
    let _ = shipped;
    write_policy(
        &policies.join("all.yaml"),
        &format!(
            "name: every-write\nmode: monitor\non:\n  file: {{ paths: [\"{}/*\"] }}\ndo: [alert]\nthrottle: {{ per: policy, max: 1, every: 1h }}\n",
            dir.display()
        ),
    )?;
    let files: Vec<PathBuf> = (0..64).map(|i| dir.join(format!("t{i}"))).collect();
    for f in &files {
        fs::write(f, "x")?;
    }
    let agent = Agent::start_with(bin, &policies, &work.join("throughput-state"), 1, &[])?;
    let pid = agent.child.id();
    let mut rounds = Vec::new();
    let mut best = 0.0;
    let mut rate = 5_000.0;
    let mut cpu_per_event = 0.0;
    let max_rounds = if quick { 6 } else { 9 };
    for _ in 0..max_rounds {
        let (events0, lost0) = agent.counters()?;
        let cpu0 = process_cpu_seconds(pid)?;
        let offered = offer(&files, rate, Duration::from_secs(1))?;
        std::thread::sleep(Duration::from_millis(500));
        let (events1, lost1) = agent.counters()?;
        let cpu1 = process_cpu_seconds(pid)?;
        let delivered = events1 - events0;
        let lost = lost1 - lost0;
        rounds.push((offered, delivered as f64, lost));
        if delivered > 0 {
            cpu_per_event = (cpu1 - cpu0) * 1e6 / delivered as f64;
        }
        if lost > 0 || (delivered as f64) < offered * 0.95 {
            break;
        }
        best = offered;
        rate *= 2.0;
    }
    agent.stop()?;
    Ok(Some(Throughput {
        rounds,
        highest_rate_without_loss: best,
        agent_cpu_us_per_event: cpu_per_event,
    }))
}

/// Opens for writing and closes files at `rate` events per second (each
/// open and each close is one event) for `span`; returns the rate achieved.
fn offer(files: &[PathBuf], rate: f64, span: Duration) -> Result<f64> {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < span {
        let due = (start.elapsed().as_secs_f64() * rate / 2.0) as u64;
        while done < due {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&files[done as usize % files.len()])?;
            drop(f);
            done += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(done as f64 * 2.0 / start.elapsed().as_secs_f64())
}

fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / ticks_per_second())
}

fn policy_scaling(root: &Path) -> Result<Vec<serde_json::Value>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "reflex",
            "--example",
            "eval_bench",
        ])
        .current_dir(root)
        .output()
        .context("running the evaluation benchmark")?;
    if !out.status.success() {
        bail!(
            "the evaluation benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn idle_footprint(bin: &Path, work: &Path, n: usize, seconds: u64) -> Result<Footprint> {
    let dir = work.join(format!("footprint-{n}"));
    fs::create_dir_all(&dir)?;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "---\nname: idle-{i}\nmode: monitor\non:\n  exec: {{ paths: [\"/opt/none{i}/bin/*\"] }}\ndo: [alert]\n"
        ));
    }
    write_policy(&dir.join("policies.yaml"), &text)?;
    let agent = Agent::start_with(
        bin,
        &dir,
        &work.join(format!("footprint-state-{n}")),
        1,
        &[],
    )?;
    let pid = agent.child.id();
    std::thread::sleep(Duration::from_secs(1));
    let cpu0 = process_cpu_seconds(pid)?;
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu1 = process_cpu_seconds(pid)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (rss_kib, peak_kib) = (kib("VmRSS:"), kib("VmHWM:"));
    agent.stop()?;
    Ok(Footprint {
        policies: n,
        seconds,
        rss_mib: rss_kib / 1024.0,
        peak_rss_mib: peak_kib / 1024.0,
        cpu_percent_of_one_core: (cpu1 - cpu0) / seconds as f64 * 100.0,
    })
}

/// B6: a writer opens a watched file under a kill policy (no revert) and
/// writes 4 KiB; how many bytes of the file changed.
fn kill_bytes(bin: &Path, work: &Path) -> Result<Option<u64>> {
    let dir = work.join("kill");
    fs::create_dir_all(&dir)?;
    let file = dir.join("guarded.conf");
    let original = vec![b'g'; 4096];
    fs::write(&file, &original)?;
    let policies = dir.join("policies");
    fs::create_dir_all(&policies)?;
    write_policy(
        &policies.join("kill.yaml"),
        &format!(
            "name: kill-writer\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [kill]\n",
            file.display()
        ),
    )?;
    let agent = Agent::start_with(bin, &policies, &dir.join("state"), 1, &[])?;
    let script = format!(
        "import os\nfd = os.open({:?}, os.O_WRONLY)\nos.write(fd, b'E' * 4096)\n",
        file.display().to_string()
    );
    let status = Command::new("python3").args(["-c", &script]).status()?;
    agent.stop()?;
    let after = fs::read(&file)?;
    let changed = after.iter().zip(&original).filter(|(a, b)| a != b).count()
        + after.len().abs_diff(original.len());
    if status.success() {
        step(format_args!("B6 the writer was not killed"));
    }
    Ok(Some(changed as u64))
}

/// A plain HTTP/1.0 GET on loopback.
fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// Microseconds from a write to `file` until `log` grows, `n` times.
fn log_growth_latencies(file: &Path, log: &Path, n: usize) -> Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let before = fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        fs::write(file, format!("change {i}\n"))?;
        let written = Instant::now();
        let deadline = written + Duration::from_secs(5);
        loop {
            if fs::metadata(log).map(|m| m.len()).unwrap_or(0) > before {
                latencies.push(written.elapsed().as_secs_f64() * 1e6);
                break;
            }
            if Instant::now() > deadline {
                bail!("change {i} was not logged within 5 s");
            }
            std::hint::spin_loop();
        }
        // Let the writer's events settle before the next change.
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(latencies)
}

/// B2: write -> reflex's alert for it appears in STATE/alerts.jsonl.
fn reflex_delivery(bin: &Path, work: &Path, n: usize, cpu: usize) -> Result<Vec<f64>> {
    let dir = work.join("delivery");
    fs::create_dir_all(dir.join("policies"))?;
    let file = dir.join("watched.conf");
    fs::write(&file, "x\n")?;
    write_policy(
        &dir.join("policies/watch.yaml"),
        &format!(
            "name: delivery\nmode: monitor\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [alert]\n",
            file.display()
        ),
    )?;
    let state = dir.join("state");
    let agent = Agent::start_with(bin, &dir.join("policies"), &state, cpu, &[])?;
    let result = log_growth_latencies(&file, &state.join("alerts.jsonl"), n);
    agent.stop()?;
    result
}

/// B2: write -> auditd's record for it appears in its log.
fn auditd_delivery(work: &Path, n: usize, cpu: usize) -> Result<Vec<f64>> {
    let file = work.join("audited.conf");
    fs::write(&file, "x\n")?;
    let peer = peers::Peer::auditd(std::slice::from_ref(&file), work, cpu)?;
    let result = log_growth_latencies(&file, Path::new("/var/log/audit/audit.log"), n);
    peer.stop()?;
    result
}
