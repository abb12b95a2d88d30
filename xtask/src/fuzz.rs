//! `cargo xtask fuzz`: libFuzzer (cargo fuzz, nightly) on the policy parser
//! and compiler and on the kernel record decoder, both targets at once (one
//! per CPU). The corpus lives in `agent/fuzz/corpus/` and is kept minimal;
//! inputs that once crashed or hung stay in `agent/fuzz/regressions/` and
//! are replayed on every run. A crash or a hang leaves its input under
//! `agent/fuzz/artifacts/` and fails the command.
use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// The fuzz targets (`agent/fuzz/fuzz_targets/*.rs`).
pub const TARGETS: [&str; 2] = ["policy", "decode"];
/// An input that takes longer than this is reported as a hang.
const HANG_SECONDS: u32 = 10;

/// Installs cargo-fuzz when missing.
fn ensure_cargo_fuzz() -> Result<()> {
    if cmd::output("cargo", &["fuzz", "--version"]).is_some() {
        return Ok(());
    }
    cmd::cargo(&["install", "--locked", "cargo-fuzz"])
}

/// Runs every target in `targets` for `seconds`, in parallel, then
/// minimises each corpus.
pub fn run(root: &Path, targets: &[String], seconds: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let crate_dir = root.join("agent");
    let logs = root.join("target/fuzz");
    fs::create_dir_all(&logs)?;
    for target in targets {
        if !TARGETS.contains(&target.as_str()) {
            bail!(
                "unknown fuzz target {target}; known: {}",
                TARGETS.join(", ")
            );
        }
        // Build first, one at a time, so the runs below only fuzz.
        cmd::status(
            Command::new("cargo")
                .args(["+nightly", "fuzz", "build", target])
                .current_dir(&crate_dir),
        )?;
    }
    let mut running = Vec::new();
    for target in targets {
        let log = logs.join(format!("{target}.log"));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        eprintln!(
            "xtask: fuzzing {target} for {seconds} s (log: {})",
            log.display()
        );
        // Inputs that once crashed or hung are replayed first, every run.
        let corpus = format!("fuzz/corpus/{target}");
        let regressions = format!("fuzz/regressions/{target}");
        let mut inputs = vec![corpus.clone()];
        if crate_dir.join(&regressions).is_dir() {
            inputs.push(regressions);
        }
        fs::create_dir_all(crate_dir.join(&corpus))?;
        let child = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", target])
            .args(&inputs)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-timeout={HANG_SECONDS}"))
            .args([
                "-rss_limit_mb=2048",
                "-use_value_profile=1",
                "-print_final_stats=1",
            ])
            .current_dir(&crate_dir)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting the fuzzer for {target}"))?;
        running.push((target, log, child));
    }
    let mut failed = Vec::new();
    for (target, log, mut child) in running {
        let status = child.wait()?;
        let text = fs::read_to_string(&log).unwrap_or_default();
        let last = text
            .lines()
            .rev()
            .find(|l| l.contains("DONE") || l.contains("pulse") || l.contains("NEW"))
            .unwrap_or("");
        let runs = text
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map(str::trim)
            .unwrap_or("?");
        eprintln!("xtask: fuzz {target}: {status}; {runs} inputs; {last}");
        if !status.success() {
            failed.push(format!("{target} (see {})", log.display()));
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzzing found a crash or hang in {}; the input is under agent/fuzz/artifacts/",
            failed.join(", ")
        );
    }
    for target in targets {
        cmd::status(
            Command::new("cargo")
                .args(["+nightly", "fuzz", "cmin", target])
                .current_dir(&crate_dir)
                .stdout(Stdio::null()),
        )?;
    }
    Ok(())
}
