//! `reflex baseline history`, `diff` and `rollback`: the versions a file's
//! baseline went through (recorded, accepted from a config-management
//! writer, updated, rolled back), what changed between them, and going
//! back to one.
//!
//! A rollback makes a copy of the chosen version the baseline (the one it
//! replaces joins the history) and restores the file to it at once, with the
//! same atomic restore a revert uses. A running agent reads the store again
//! when it changed, so it sees the restore as what the baseline says and
//! answers nothing; an agent started later finds no drift.
use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, bail};

use crate::{
    config::{Config, DEFAULT_CONFIG},
    fsio::{
        self,
        xattr::{XattrRead, Xattrs},
    },
    settle::file::{
        baseline::{Baseline, BaselineStore, MAX_BASELINE_BYTES},
        history::{How, select},
    },
    textdiff,
};

/// The store with the configured history bound.
pub(crate) fn open(state_dir: &Path) -> anyhow::Result<BaselineStore> {
    let (history, max_xattr_bytes) = Config::load(Path::new(DEFAULT_CONFIG), false)
        .map(|c| (c.baselines.history(), c.baselines.max_xattr_bytes()))
        .unwrap_or((
            crate::settle::file::baseline::DEFAULT_HISTORY,
            crate::settle::file::baseline::DEFAULT_MAX_XATTR_BYTES,
        ));
    Ok(BaselineStore::open(state_dir)
        .context("opening the baseline store")?
        .with_history(history)
        .with_max_xattr_bytes(max_xattr_bytes))
}

/// The one policy keeping a baseline of `path`, or the one asked for.
fn policy_of(store: &BaselineStore, path: &str, wanted: Option<&str>) -> anyhow::Result<String> {
    let policies: Vec<&str> = store.of_path(path).map(|(p, _)| p).collect();
    match (wanted, policies.as_slice()) {
        (Some(w), _) if policies.contains(&w) => Ok(w.to_string()),
        (Some(w), _) => bail!("policy {w:?} keeps no baseline of {path}"),
        (None, []) => bail!("no policy keeps a baseline of {path}"),
        (None, [one]) => Ok(one.to_string()),
        (None, many) => bail!(
            "several policies keep a baseline of {path} ({}); name one with --policy",
            many.join(", ")
        ),
    }
}

/// Prints every version of `path`'s baseline, newest first.
pub fn history(state_dir: &Path, path: &str, policy: Option<&str>) -> anyhow::Result<ExitCode> {
    let store = open(state_dir)?;
    let policies: Vec<String> = match policy {
        Some(p) => vec![policy_of(&store, path, Some(p))?],
        None => store.of_path(path).map(|(p, _)| p.to_string()).collect(),
    };
    if policies.is_empty() {
        bail!("no policy keeps a baseline of {path}");
    }
    for policy in policies {
        println!("{path} (policy {policy}):");
        for (i, b) in store.versions(&policy, path).into_iter().enumerate() {
            println!(
                "{} v{:<3} {}  {:<9} {}  {:o} {}:{} {} bytes{}",
                if i == 0 { "*" } else { " " },
                b.version,
                b.recorded,
                b.how.as_str(),
                &b.sha256[..16.min(b.sha256.len())],
                b.mode,
                b.uid,
                b.gid,
                b.size,
                b.by.as_deref()
                    .map(|by| format!("  by {by}"))
                    .unwrap_or_default(),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the unified diff between two versions, or a version and the file
/// now, and which extended attributes differ (where both sides recorded
/// them); exits 1 when they differ, as `diff` does.
pub fn diff(
    state_dir: &Path,
    path: &str,
    policy: Option<&str>,
    from: &Option<String>,
    to: &Option<String>,
) -> anyhow::Result<ExitCode> {
    let store = open(state_dir)?;
    let policy = policy_of(&store, path, policy)?;
    let versions = store.versions(&policy, path);
    let pick = |wanted: &str| -> anyhow::Result<&Baseline> {
        select(&versions, wanted).with_context(|| {
            format!(
                "no version {wanted:?} of the baseline of {path} (see `reflex baseline history`)"
            )
        })
    };
    // Content, label, and the attributes when they were recorded.
    type Side = (Vec<u8>, String, Option<Xattrs>);
    let read_version = |b: &Baseline| -> anyhow::Result<Side> {
        let object = store.object(b);
        let content = std::fs::read(&object)
            .with_context(|| format!("reading version {} ({})", b.version, object.display()))?;
        let xattrs = store
            .xattrs(b)
            .with_context(|| format!("reading the attributes of version {}", b.version))?;
        Ok((
            content,
            format!("{path} v{} ({})", b.version, &b.sha256[..12]),
            xattrs,
        ))
    };
    let old = match from {
        Some(v) => read_version(pick(v)?)?,
        None => read_version(versions[0])?,
    };
    let new = match to {
        Some(v) => read_version(pick(v)?)?,
        None => (
            fsio::read_content(Path::new(path), MAX_BASELINE_BYTES)
                .with_context(|| format!("reading {path}"))?,
            format!("{path} (now)"),
            match fsio::xattr::read(Path::new(path), u64::MAX) {
                Ok(XattrRead::Recorded(x)) => Some(x),
                _ => None,
            },
        ),
    };
    // Attributes are compared where both sides recorded them.
    let attributes = match (&old.2, &new.2) {
        (Some(o), Some(n)) => o.differences(n),
        _ => Vec::new(),
    };
    if !attributes.is_empty() {
        println!(
            "extended attributes of {} and {} differ: {}",
            old.1,
            new.1,
            attributes.join(", ")
        );
    }
    if old.0 == new.0 {
        return Ok(if attributes.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    match textdiff::unified(&old.0, &new.0, &old.1, &new.1, usize::MAX) {
        Some(diff) => print!("{}", diff.text),
        None => println!("binary content: {} and {} differ", old.1, new.1),
    }
    Ok(ExitCode::from(1))
}

/// Makes version `to` the baseline of `path` again and restores the file.
pub fn rollback(
    state_dir: &Path,
    path: &str,
    policy: Option<&str>,
    to: &str,
) -> anyhow::Result<ExitCode> {
    let mut store = open(state_dir)?;
    let policy = policy_of(&store, path, policy)?;
    let baseline = store
        .reinstate(&policy, path, to, How::Rollback)
        .with_context(|| format!("rolling the baseline of {path} back to {to}"))?;
    let xattrs = store
        .xattrs(&baseline)
        .with_context(|| format!("reading the attributes of version {to} of {path}"))?;
    let key = fsio::restore(
        Path::new(path),
        &store.object(&baseline),
        baseline.ownership(),
        xattrs.as_ref(),
    )
    .with_context(|| format!("restoring {path}"))?;
    println!(
        "{path}: baseline v{} (a copy of {}, sha256 {}) in force; file restored (inode {})",
        baseline.version,
        baseline.by.as_deref().unwrap_or("an earlier version"),
        &baseline.sha256[..16],
        key.ino
    );
    Ok(ExitCode::SUCCESS)
}
