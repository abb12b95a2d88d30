//! Policies: the YAML format (`spec`), reading files (`load`), validation and
//! compilation (`compile`), the compiled form (`model`), indexes and
//! evaluation (`index`, `eval`).
pub mod accept;
pub mod checked;
pub mod compile;
pub mod eval;
pub mod identity;
pub mod index;
pub mod load;
pub mod model;
pub mod spec;
pub mod value;

use std::path::PathBuf;

pub use eval::PolicySet;
pub use load::PolicyError;
pub use model::{Action, Policy, PolicyRef};
pub use spec::Mode;

/// Reads, validates and compiles every policy under `paths`. Any error fails
/// the whole set, so a half-valid directory is never half-loaded.
pub fn load_set(paths: &[PathBuf]) -> Result<PolicySet, Vec<PolicyError>> {
    let (sources, mut errors) = load::load_paths(paths);
    let policies = compile::compile_all(sources, &mut errors);
    if errors.is_empty() {
        Ok(PolicySet::new(policies))
    } else {
        Err(errors)
    }
}

/// Validates one file's text without touching the file system's permissions;
/// returns every error (the golden tests and `reflex check` share this path).
pub fn check_source(file: &std::path::Path, text: &str) -> Vec<PolicyError> {
    let (sources, mut errors) = load::parse_source(file, text);
    compile::compile_all(sources, &mut errors);
    errors
}

/// Compiles policy text that must be valid, panicking with every error;
/// for unit tests that need compiled policies.
#[cfg(test)]
pub(crate) fn compile_valid(text: &str) -> Vec<Policy> {
    let (sources, mut errors) = load::parse_source(std::path::Path::new("t.yaml"), text);
    let policies = compile::compile_all(sources, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    policies
}
