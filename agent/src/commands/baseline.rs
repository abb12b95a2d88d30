//! `reflex baseline`: show the recorded baselines, or accept the current
//! state of a policy's files deliberately (as `aide --update` does). A
//! running agent reads the store again at its next look at a file.
use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, bail};

use crate::{
    policy::{
        self, Action,
        model::Trigger,
        value::{PathGlob, glob_set},
    },
    settle::file::{baseline::BaselineStore, watch::WatchList},
};

/// Prints every baseline: policy, path, sha256, mode, owner, when.
pub fn list(state_dir: &Path) -> anyhow::Result<ExitCode> {
    let store = BaselineStore::open(state_dir).context("opening the baseline store")?;
    let mut count = 0;
    for (policy, path, b) in store.list() {
        println!(
            "{policy}\t{path}\tv{}\t{}\t{:o}\t{}:{}\t{}\t{}",
            b.version,
            &b.sha256[..16],
            b.mode,
            b.uid,
            b.gid,
            b.recorded,
            b.how.as_str()
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
    // Baselines are copies of managed files: owner-only, like the agent's.
    super::state::private_umask();
    super::state::secure(state_dir).context("securing the state directory")?;
    let mut store = super::versions::open(state_dir)?;
    let mut watch = WatchList::new(None);
    watch.configure(&set);
    let matcher = glob_set(paths.iter().map(PathGlob::glob))
        .context("the policy's paths do not build one matcher")?;
    let covered: Vec<String> = watch
        .paths()
        .filter(|p| matcher.is_match(p) && Path::new(p).exists())
        .map(str::to_string)
        .collect();
    for path in &covered {
        let b = store
            .record(name, Path::new(path), source.as_deref())
            .with_context(|| format!("recording {path}"))?;
        println!("{path}\t{}", &b.sha256[..16]);
    }
    // Recorded now: from here on a file that appears under these paths was
    // created, not found.
    store
        .remember(name, paths)
        .context("remembering the paths the policy covers")?;
    eprintln!(
        "{} baselines of {name} updated; a running agent uses them from its next look",
        covered.len()
    );
    Ok(ExitCode::SUCCESS)
}
