//! Reads what a guest left in its share: each test's verdict from the
//! libtest output, skips with their reasons from the skip file the test
//! library writes (`REFLEX_TEST_SKIPS`), and `reflex doctor`'s verdict.
use std::{collections::BTreeMap, fs, path::Path, path::PathBuf};

use anyhow::Result;
use serde::Serialize;

/// One kernel's run.
#[derive(Serialize)]
pub struct Report {
    /// `5.10`, `6.1`, `6.12`.
    pub kernel: String,
    /// The guest's `uname -r`.
    pub release: String,
    /// The LSMs the guest runs.
    pub lsm: String,
    /// Whether `reflex doctor` said the agent can run there.
    pub doctor_ok: bool,
    /// Whether the guest powered off by itself within the limit.
    pub finished: bool,
    /// Wall time from boot to power-off.
    pub seconds: f64,
    /// Per test binary.
    pub binaries: Vec<Binary>,
}

/// One test binary's tests.
#[derive(Serialize)]
pub struct Binary {
    /// Target name (`file_revert`).
    pub name: String,
    /// Exit code, `None` when it never finished.
    pub exit: Option<i32>,
    /// Test names that passed, skips excluded.
    pub passed: Vec<String>,
    /// Test names that failed.
    pub failed: Vec<String>,
    /// Test name to the reason it was skipped.
    pub skipped: BTreeMap<String, String>,
}

impl Report {
    /// Everything ran and nothing failed.
    pub fn ok(&self) -> bool {
        self.finished
            && self.doctor_ok
            && self
                .binaries
                .iter()
                .all(|b| b.exit == Some(0) && b.failed.is_empty())
    }
}

/// Reads the results of the guest that ran `binaries` into `out`.
pub fn read(
    kernel: &str,
    release: &str,
    out: &Path,
    binaries: &[(String, PathBuf)],
    finished: bool,
    seconds: f64,
) -> Result<Report> {
    let results = out.join("results");
    let text = |name: &str| fs::read_to_string(results.join(name)).unwrap_or_default();
    let skips = text("skips.tsv");
    let mut report = Report {
        kernel: kernel.to_string(),
        release: text("uname").trim().to_string(),
        lsm: text("lsm").trim().to_string(),
        doctor_ok: text("doctor.rc").trim() == "0",
        finished,
        seconds,
        binaries: Vec::new(),
    };
    if report.release.is_empty() {
        report.release = format!("{release} (did not start the tests)");
    }
    for (name, _) in binaries {
        let mut binary = Binary {
            name: name.clone(),
            exit: text(&format!("{name}.rc")).trim().parse().ok(),
            passed: Vec::new(),
            failed: Vec::new(),
            skipped: BTreeMap::new(),
        };
        for line in skips.lines() {
            let mut f = line.splitn(3, '\t');
            if let (Some(b), Some(t), Some(reason)) = (f.next(), f.next(), f.next())
                && b == name
            {
                binary.skipped.insert(t.to_string(), reason.to_string());
            }
        }
        for line in text(&format!("{name}.log")).lines() {
            let Some(rest) = line.strip_prefix("test ") else {
                continue;
            };
            let Some((test, verdict)) = rest.split_once(" ... ") else {
                continue;
            };
            let test = test.to_string();
            if verdict.starts_with("ok") && !binary.skipped.contains_key(&test) {
                binary.passed.push(test);
            } else if verdict.starts_with("FAILED") {
                binary.failed.push(test);
            } else if verdict.starts_with("ignored") {
                let reason = verdict.split_once(", ").map_or("#[ignore]", |(_, r)| r);
                binary.skipped.insert(test, reason.to_string());
            }
        }
        report.binaries.push(binary);
    }
    Ok(report)
}

/// A Markdown table: one row per kernel and test binary, then the skips.
pub fn table(reports: &[Report]) -> String {
    let mut s = String::from(
        "| kernel | binary | passed | failed | skipped | exit |\n|---|---|---|---|---|---|\n",
    );
    let mut skips = String::new();
    for r in reports {
        s.push_str(&format!(
            "| {} | (boot to power-off {:.0} s; doctor {}; lsm {}) | | | | {} |\n",
            r.release,
            r.seconds,
            if r.doctor_ok { "ok" } else { "FAIL" },
            r.lsm,
            if r.finished { "" } else { "timed out" },
        ));
        for b in &r.binaries {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.kernel,
                b.name,
                b.passed.len(),
                b.failed.len(),
                b.skipped.len(),
                b.exit.map_or("none".to_string(), |c| c.to_string()),
            ));
            for f in &b.failed {
                skips.push_str(&format!("{} {}::{f}: FAILED\n", r.kernel, b.name));
            }
            for (t, why) in &b.skipped {
                skips.push_str(&format!("{} {}::{t}: skipped: {why}\n", r.kernel, b.name));
            }
        }
    }
    s + "\n" + &skips
}
