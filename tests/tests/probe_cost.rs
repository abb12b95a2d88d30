//! The probe cost guard: each kernel program's instruction counts, as this
//! kernel's verifier reports them after load, against the baseline in
//! `tests/probe_cost.baseline`. A count, not a time: it cannot flake on a
//! busy machine, and it catches what makes a handler slow to run (a new
//! loop, a bigger copy, a walk put back on a hot path) as it grows the
//! program. It says nothing of helper costs (a ring-buffer wake-up, a map
//! update): `cargo xtask bench --only workloads` measures those.
//!
//! `translated` (instructions after the kernel's rewrites) may grow by
//! [`TRANSLATED_SLACK`] and `verified` (the verifier's work, every path
//! it explored) by [`VERIFIED_SLACK`]; programs missing from the baseline
//! fail too. The baseline holds for the kernel release it names; on
//! another the counts are printed and not compared. After a deliberate
//! change, `REFLEX_PROBE_COST_WRITE=1` rewrites the baseline.
use std::{fs, path::PathBuf};

use reflex::loader::{LoadOptions, Probes, ProgramSize};
use reflex_tests::require_root;

/// Growth of the translated length allowed before the guard fails.
const TRANSLATED_SLACK: f64 = 1.10;
/// Growth of the verifier's count allowed before the guard fails.
const VERIFIED_SLACK: f64 = 1.25;

fn baseline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("probe_cost.baseline")
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("kernel release")
        .trim()
        .to_string()
}

/// `release` then one `name verified translated` line per program.
fn render(release: &str, sizes: &[ProgramSize]) -> String {
    let mut text =
        format!("# name verified translated; see tests/tests/probe_cost.rs\nkernel {release}\n");
    for s in sizes {
        text.push_str(&format!("{} {} {}\n", s.name, s.verified, s.translated));
    }
    text
}

fn parse(text: &str) -> (String, Vec<ProgramSize>) {
    let mut release = String::new();
    let mut sizes = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["kernel", r] => release = r.to_string(),
            [name, verified, translated] => sizes.push(ProgramSize {
                name: name.to_string(),
                verified: verified.parse().expect("a count"),
                translated: translated.parse().expect("a count"),
            }),
            _ => panic!("baseline line {line:?} is not `name verified translated`"),
        }
    }
    (release, sizes)
}

/// What grew past its slack or is not in the baseline, said.
fn regressions(baseline: &[ProgramSize], now: &[ProgramSize]) -> Vec<String> {
    let mut out = Vec::new();
    for s in now {
        let Some(base) = baseline.iter().find(|b| b.name == s.name) else {
            out.push(format!("{}: not in the baseline", s.name));
            continue;
        };
        if f64::from(s.translated) > f64::from(base.translated) * TRANSLATED_SLACK {
            out.push(format!(
                "{}: {} translated instructions, baseline {}",
                s.name, s.translated, base.translated
            ));
        }
        if f64::from(s.verified) > f64::from(base.verified) * VERIFIED_SLACK {
            out.push(format!(
                "{}: {} verified instructions, baseline {}",
                s.name, s.verified, base.verified
            ));
        }
    }
    out
}

#[test]
fn guard_flags_growth_past_the_slack_and_unknown_programs() {
    let base = |verified, translated| ProgramSize {
        name: "sys_enter".into(),
        verified,
        translated,
    };
    assert!(regressions(&[base(100, 100)], &[base(125, 110)]).is_empty());
    assert_eq!(regressions(&[base(100, 100)], &[base(100, 111)]).len(), 1);
    assert_eq!(regressions(&[base(100, 100)], &[base(126, 100)]).len(), 1);
    let other = ProgramSize {
        name: "other".into(),
        ..base(1, 1)
    };
    assert_eq!(regressions(&[base(100, 100)], &[other]).len(), 1);
    let (release, sizes) = parse(&render("6.18.1", &[base(3, 4)]));
    assert_eq!((release.as_str(), sizes), ("6.18.1", vec![base(3, 4)]));
}

#[test]
fn no_probe_grew_past_its_baseline() {
    require_root();
    let probes = Probes::load(&LoadOptions::default()).expect("probes load");
    let now = probes.program_sizes();
    drop(probes);
    assert!(!now.is_empty(), "no program reported its size");
    let release = kernel_release();
    let path = baseline_path();
    if std::env::var_os("REFLEX_PROBE_COST_WRITE").is_some() {
        fs::write(&path, render(&release, &now)).expect("writing the baseline");
        return;
    }
    let text = fs::read_to_string(&path).expect("tests/probe_cost.baseline");
    let (base_release, baseline) = parse(&text);
    if base_release != release {
        eprintln!(
            "baseline is for kernel {base_release}, this is {release}: not compared\n{}",
            render(&release, &now)
        );
        return;
    }
    let found = regressions(&baseline, &now);
    assert!(
        found.is_empty(),
        "probes grew past the baseline (REFLEX_PROBE_COST_WRITE=1 rewrites it after a deliberate change):\n{}",
        found.join("\n")
    );
}
