//! `reflex check`: validate policy files and report every error at once.
use std::{path::PathBuf, process::ExitCode};

use crate::policy::{compile, load};

/// Prints every error as `file:line:column: message`; exit 0 when clean, 1 otherwise.
pub fn check(paths: &[PathBuf]) -> ExitCode {
    let (sources, mut errors) = load::load_paths(paths);
    let count = sources.len();
    let policies = compile::compile_all(sources, &mut errors);
    errors.sort_by(|a, b| (&a.file, a.position).cmp(&(&b.file, b.position)));
    for error in &errors {
        println!("{error}");
    }
    if errors.is_empty() {
        println!("{} policies OK", policies.len());
        ExitCode::SUCCESS
    } else {
        println!(
            "{} error{} in {count} polic{}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            if count == 1 { "y" } else { "ies" }
        );
        ExitCode::FAILURE
    }
}
