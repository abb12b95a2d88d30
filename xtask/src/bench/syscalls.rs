//! B1: overhead of an open/write/close loop on unwatched files and of a
//! connect/accept loop on loopback, as a ratio to no agent (agent on
//! another CPU and on the same CPU); the same file loop under auditd with
//! 1000 watch rules and under a bpftrace one-liner with a path filter.
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Result;
use serde::Serialize;

use super::{
    Agent, Bench, Fixture, Plan, pin,
    report::{Spread, spread},
    step,
};
use crate::peers;

/// One row of B1: a workload without and with an agent or peer.
#[derive(Serialize)]
pub(super) struct Overhead {
    pub(super) workload: &'static str,
    pub(super) placement: &'static str,
    pub(super) iterations: usize,
    pub(super) baseline_ns_per_iter: Spread,
    pub(super) reflex_ns_per_iter: Spread,
    pub(super) ratio: Spread,
}

/// Every B1 row: both loops for each placement of the agent, then the peers.
pub(super) fn measure(bench: &Bench, fixture: &Fixture) -> Result<Vec<Overhead>> {
    let Bench {
        bin, work, plan, ..
    } = bench;
    let (policies, loop_dir) = (&fixture.policies, &fixture.loop_dir);
    let mut overhead = Vec::new();
    let placements: &[(&'static str, usize, usize)] = if bench.cpus > 1 {
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
        file_loop(loop_dir, plan.loop_iterations / 4)?;
        for _ in 0..plan.runs {
            base.push(file_loop(loop_dir, plan.loop_iterations)?);
            let agent = Agent::start(bin, policies, &work.join("state"), agent_cpu)?;
            file_loop(loop_dir, plan.loop_iterations / 10)?;
            with.push(file_loop(loop_dir, plan.loop_iterations)?);
            agent.stop()?;
        }
        overhead.push(row(
            "open/write/close, unwatched files",
            placement,
            plan.loop_iterations,
            base,
            with,
        ));

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
            let agent = Agent::start(bin, policies, &work.join("state"), agent_cpu)?;
            connect_loop(rounds / 10)?;
            with.push(connect_loop(rounds)?);
            agent.stop()?;
        }
        overhead.push(row(
            "connect/accept/close on loopback",
            placement,
            rounds,
            base,
            with,
        ));
    }

    pin(0)?;
    let peer_cpu = bench.peer_cpu;
    if peers::available("auditd") && peers::available("auditctl") {
        step(format_args!("B1 peer auditd with 1000 watch rules"));
        let (base, with) = peer_runs(plan, bench.quick, loop_dir, || {
            peers::Peer::auditd(&fixture.watched, work, peer_cpu)
        })?;
        overhead.push(row(
            "auditd, 1000 watch rules",
            "peer",
            plan.loop_iterations,
            base,
            with,
        ));
    }
    if peers::available("bpftrace") {
        step(format_args!("B1 peer bpftrace with a path filter"));
        let (base, with) = peer_runs(plan, bench.quick, loop_dir, || {
            peers::Peer::bpftrace(peer_cpu)
        })?;
        overhead.push(row(
            "bpftrace, openat path filter",
            "peer",
            plan.loop_iterations,
            base,
            with,
        ));
    }
    Ok(overhead)
}

fn row(
    workload: &'static str,
    placement: &'static str,
    iterations: usize,
    base: Vec<f64>,
    with: Vec<f64>,
) -> Overhead {
    let ratio = base.iter().zip(&with).map(|(b, w)| w / b).collect();
    Overhead {
        workload,
        placement,
        iterations,
        baseline_ns_per_iter: spread(base),
        reflex_ns_per_iter: spread(with),
        ratio: spread(ratio),
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
