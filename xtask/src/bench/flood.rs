//! B8: a UDP `connect()` flood at the highest rate one core can make
//! (CPU 0; the agent on CPU 1), while a watched file under a revert policy
//! is changed 20 times a second. Three policy sets: no connect policy
//! (every connect filtered in the kernel), a connect policy elsewhere (the
//! flood filtered by prefix), and one matching the flood (every connect
//! sent to the agent). Figures: agent CPU per offered connect, connect
//! records sent, filtered and lost, and file events lost.
use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use reflex_harness::scrape;
use serde::Serialize;

use super::{Agent, Bench, pin, proc::process_cpu_seconds, step, write_policy};

/// One policy set's figures.
#[derive(Serialize)]
pub(super) struct FloodCase {
    /// Which connect policies were loaded.
    pub(super) policies: &'static str,
    /// `connect()` calls made per second.
    pub(super) offered_per_s: f64,
    /// Agent CPU (user + system) per offered connect, nanoseconds.
    pub(super) agent_cpu_ns_per_connect: f64,
    /// Connect records the agent decoded.
    pub(super) connect_events: u64,
    /// Connects counted in the kernel instead of sent.
    pub(super) filtered: u64,
    /// Connect records lost to a full ring buffer.
    pub(super) connect_lost: u64,
    /// Changes made to the watched file during the flood.
    pub(super) file_changes: u64,
    /// File events lost in the kernel (the figure that must stay 0).
    pub(super) file_lost: u64,
}

const CASES: [(&str, &str); 3] = [
    ("none", ""),
    (
        "elsewhere",
        "name: bench-dns\nmode: monitor\non:\n  connect: { direction: [outbound], remote: [\"198.18.0.0/15\"], ports: [53] }\ndo: [alert]\n",
    ),
    (
        "matching",
        "name: bench-udp\nmode: monitor\non:\n  connect: { direction: [outbound], protocol: [udp] }\ndo: [alert]\nthrottle: { per: policy, max: 1, every: 1h }\n",
    ),
];

pub(super) fn measure(bench: &Bench) -> Result<Vec<FloodCase>> {
    let span = Duration::from_secs(if bench.quick { 3 } else { 10 });
    let mut out = Vec::new();
    for (name, connect_policy) in CASES {
        step(format_args!(
            "B8 UDP connect flood, connect policies: {name}"
        ));
        out.push(case(bench, name, connect_policy, span)?);
    }
    Ok(out)
}

fn case(
    bench: &Bench,
    name: &'static str,
    connect_policy: &str,
    span: Duration,
) -> Result<FloodCase> {
    let work = bench.work.join(format!("flood-{name}"));
    let policies = work.join("policies");
    fs::create_dir_all(&policies)?;
    let target = work.join("app.conf");
    fs::write(&target, "good\n")?;
    write_policy(
        &policies.join("file.yaml"),
        &format!(
            "name: bench-flood-file\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [revert]\n",
            target.display()
        ),
    )?;
    if !connect_policy.is_empty() {
        write_policy(&policies.join("connect.yaml"), connect_policy)?;
    }
    let agent = Agent::start(bench.bin, &policies, &work.join("state"), bench.peer_cpu)?;
    let addr = agent.0.metrics_addr(Duration::ZERO)?;
    let read = |addr: SocketAddr| -> Result<[u64; 4]> {
        let m = scrape(addr)?;
        Ok([
            m.sum("reflex_events_total", &[("family", "connect")]) as u64,
            m.sum("reflex_kernel_filtered_total", &[("family", "connect")]) as u64,
            m.sum(
                "reflex_events_lost_total",
                &[("place", "kernel"), ("family", "connect")],
            ) as u64,
            m.sum(
                "reflex_events_lost_total",
                &[("place", "kernel"), ("family", "file")],
            ) as u64,
        ])
    };
    let before = read(addr)?;
    let cpu0 = process_cpu_seconds(agent.pid())?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, target) = (stop.clone(), target.clone());
        std::thread::spawn(move || change_file(&target, &stop))
    };
    let (connects, elapsed) = flood(span)?;
    stop.store(true, Ordering::Relaxed);
    let file_changes = writer.join().map_err(|_| anyhow::anyhow!("writer"))??;
    // Let the agent finish what is queued before its CPU is read.
    std::thread::sleep(Duration::from_millis(1500));
    let cpu1 = process_cpu_seconds(agent.pid())?;
    let after = read(addr)?;
    agent.stop()?;
    let _ = fs::remove_dir_all(&work);
    Ok(FloodCase {
        policies: name,
        offered_per_s: connects as f64 / elapsed.as_secs_f64(),
        agent_cpu_ns_per_connect: (cpu1 - cpu0) * 1e9 / connects.max(1) as f64,
        connect_events: after[0] - before[0],
        filtered: after[1] - before[1],
        connect_lost: after[2] - before[2],
        file_changes,
        file_lost: after[3] - before[3],
    })
}

/// `connect()` on one UDP socket to 127.0.0.1, 64 ports in turn, on CPU 0
/// for `span`; returns the calls made and the time they took.
fn flood(span: Duration) -> Result<(u64, Duration)> {
    std::thread::spawn(move || -> Result<(u64, Duration)> {
        pin(0)?;
        let socket = UdpSocket::bind("127.0.0.1:0").context("flood socket")?;
        let targets: Vec<SocketAddr> = (0..64)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 20_000 + i)))
            .collect();
        let start = Instant::now();
        let mut done = 0u64;
        while start.elapsed() < span {
            for target in &targets {
                let _ = socket.connect(target);
            }
            done += targets.len() as u64;
        }
        Ok((done, start.elapsed()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("flood thread"))?
}

/// Changes `target` 20 times a second until `stop`; returns how many times.
fn change_file(target: &Path, stop: &AtomicBool) -> Result<u64> {
    pin(0)?;
    let mut changes = 0;
    while !stop.load(Ordering::Relaxed) {
        fs::write(target, format!("bad {changes}\n"))?;
        changes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(changes)
}

/// B2 under B8's worst case: write -> restored while a UDP connect flood
/// runs that an unthrottled monitor policy alerts on, every connect. With
/// one queue shared by every family the change waits behind the flood's
/// alerts; with a lane of its own it should not. Microseconds, per change.
pub(super) fn revert_under_flood(bench: &Bench) -> Result<Vec<f64>> {
    let changes = if bench.quick { 20 } else { 100 };
    step(format_args!(
        "B2 write -> restored under an alerted UDP connect flood, {changes} changes"
    ));
    let work = bench.work.join("flood-revert");
    let policies = work.join("policies");
    fs::create_dir_all(&policies)?;
    let target = work.join("app.conf");
    fs::write(&target, "good content\n")?;
    write_policy(
        &policies.join("file.yaml"),
        &format!(
            "name: bench-flood-file\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [revert]\n",
            target.display()
        ),
    )?;
    write_policy(
        &policies.join("connect.yaml"),
        "name: bench-udp-all\nmode: monitor\non:\n  connect: { direction: [outbound], remote: [\"127.0.0.1/32\"], ports: [\"20000-20063\"], protocol: [udp] }\ndo: [alert]\n",
    )?;
    let agent = Agent::start(bench.bin, &policies, &work.join("state"), bench.peer_cpu)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        std::thread::spawn(move || flood_until(&stop))
    };
    // A backlog first: the flood outruns the agent's alerts within this.
    std::thread::sleep(Duration::from_secs(1));
    pin(0)?;
    let latencies = super::revert::restore_latencies(&target, changes, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let flooded = flooding
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread"))?;
    agent.stop()?;
    let _ = fs::remove_dir_all(&work);
    flooded?;
    latencies
}

/// [`flood`]'s loop until `stop`.
fn flood_until(stop: &AtomicBool) -> Result<()> {
    pin(0)?;
    let socket = UdpSocket::bind("127.0.0.1:0").context("flood socket")?;
    let targets: Vec<SocketAddr> = (0..64)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 20_000 + i)))
        .collect();
    while !stop.load(Ordering::Relaxed) {
        for target in &targets {
            let _ = socket.connect(target);
        }
    }
    Ok(())
}
