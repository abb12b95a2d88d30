//! B4: evaluation cost per event with 10, 1000 and 10000 policies, from
//! `agent/examples/eval_bench.rs` (one JSON object per line).
use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use super::step;

pub(super) fn measure(root: &Path) -> Result<Vec<serde_json::Value>> {
    step(format_args!(
        "B4 evaluation cost per event with 10, 1 000 and 10 000 policies"
    ));
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
