//! Tests that need a kernel feature this host lacks skip, never silently:
//! the reason (the one `reflex doctor` gives) goes to stderr and, when
//! `REFLEX_TEST_SKIPS` names a file (`cargo xtask vmtest` does), a line
//! `BINARY<TAB>TEST<TAB>REASON` is appended there for the matrix report.
use std::io::Write as _;

/// Records that the running test is skipped for `reason`; the caller
/// returns right after.
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown")
        .to_string();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, _hash)) => name.to_string(),
            None => stem,
        })
        .unwrap_or_default();
    let reason = reason.replace(['\t', '\n'], " ");
    eprintln!("SKIPPED {binary}::{test}: {reason}");
    if let Some(path) = std::env::var_os("REFLEX_TEST_SKIPS") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("opening the skip file");
        writeln!(file, "{binary}\t{test}\t{reason}").expect("writing the skip file");
    }
}
