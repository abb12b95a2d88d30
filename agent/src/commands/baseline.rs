//! `reflex baseline`: show the recorded baselines, or accept the current
//! state of a policy's files deliberately (as `aide --update` does).
use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, bail};

use crate::{
    files::Files,
    policy::{self, Action, model::Trigger},
};

/// Prints every baseline: policy, path, sha256, mode, owner, when.
pub fn list(state_dir: &Path) -> anyhow::Result<ExitCode> {
    let files = Files::new(None, state_dir).context("opening the baseline store")?;
    let mut count = 0;
    for (policy, path, b) in files.baselines.list() {
        println!(
            "{policy}\t{path}\t{}\t{:o}\t{}:{}\t{}",
            &b.sha256[..16],
            b.mode,
            b.uid,
            b.gid,
            b.recorded
        );
        count += 1;
    }
    eprintln!(
        "{count} baselines in {}",
        state_dir.join("baselines").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Records the current state of every file `policy` covers as its baseline.
/// A running agent keeps the baselines it loaded until it restarts.
pub fn update(state_dir: &Path, policies: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let set = policy::load_set(&[policies.to_owned()]).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        anyhow::anyhow!("the policies in {} have errors", policies.display())
    })?;
    let Some(policy) = set.policies().iter().find(|p| p.name == name) else {
        bail!("no policy named {name:?} in {}", policies.display());
    };
    let Trigger::File { paths, .. } = &policy.trigger else {
        bail!("policy {name:?} is not a file policy");
    };
    let Some(source) = policy.actions.iter().find_map(|a| match a {
        Action::Revert { source } => Some(source.clone()),
        _ => None,
    }) else {
        bail!("policy {name:?} has no revert action, so it keeps no baseline");
    };
    let mut files = Files::new(None, state_dir).context("opening the baseline store")?;
    files.watch.configure(&set);
    let matcher = {
        let mut b = globset::GlobSetBuilder::new();
        for p in paths {
            b.add(policy::value::compile_glob(&p.0).map_err(anyhow::Error::msg)?);
        }
        b.build()?
    };
    let covered: Vec<String> = files
        .watch
        .paths()
        .filter(|p| matcher.is_match(p) && Path::new(p).exists())
        .map(str::to_string)
        .collect();
    for path in &covered {
        let b = files
            .baselines
            .record(name, Path::new(path), source.as_deref())
            .with_context(|| format!("recording {path}"))?;
        println!("{path}\t{}", &b.sha256[..16]);
    }
    eprintln!(
        "{} baselines of {name} updated; restart the agent to use them",
        covered.len()
    );
    Ok(ExitCode::SUCCESS)
}
