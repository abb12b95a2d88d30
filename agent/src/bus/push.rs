//! `reflex policy push DIR --bus URL`: checks a policy directory as
//! `reflex check` does and publishes it as one revision: every file under
//! its key, keys of files no longer there deleted, the manifest last.
use std::{path::Path, process::ExitCode};

use async_nats::jetstream;
use futures_util::StreamExt as _;

use super::{
    BusConfig,
    revision::{DEFAULT_BUCKET, MANIFEST, Manifest, valid_key},
};
use crate::policy::{compile, load};

/// What `push` is told.
pub struct PushArgs<'a> {
    /// The directory.
    pub dir: &'a Path,
    /// The bus (URL and credentials).
    pub bus: BusConfig,
    /// Bucket (default `reflex-policies`).
    pub bucket: Option<String>,
    /// Key prefix (default none).
    pub key_prefix: Option<String>,
    /// Publish even when the check fails (to see agents refuse it).
    pub unchecked: bool,
}

/// Checks and pushes; prints the revision. Exit 1 when the set has errors
/// (nothing is pushed) or the bus refuses.
pub async fn push(args: PushArgs<'_>) -> anyhow::Result<ExitCode> {
    let (sources, mut errors) = load::load_paths(&[args.dir.to_owned()]);
    compile::compile_all(sources, &mut errors);
    for error in &errors {
        println!("{error}");
    }
    if !errors.is_empty() && !args.unchecked {
        println!("{} error(s); nothing pushed", errors.len());
        return Ok(ExitCode::FAILURE);
    }
    let prefix = args.key_prefix.unwrap_or_default();
    let mut files = Vec::new();
    for file in load::policy_files(args.dir)? {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let key = format!("{prefix}{name}");
        anyhow::ensure!(
            valid_key(&key),
            "{key} is not a key-value key (letters, digits, - / _ = .)"
        );
        files.push((key, std::fs::read_to_string(&file)?));
    }
    let manifest = Manifest::of(&files);
    let client = args.bus.connect("reflex policy push").await?;
    let context = jetstream::new(client);
    let bucket = args.bucket.unwrap_or_else(|| DEFAULT_BUCKET.into());
    let store = super::bucket(&context, &bucket, 5)
        .await
        .map_err(anyhow::Error::msg)?;
    let manifest_key = format!("{prefix}{MANIFEST}");
    let mut stale = Vec::new();
    let mut keys = store.keys().await?;
    while let Some(key) = keys.next().await {
        let key = key?;
        if key.starts_with(&prefix) && key != manifest_key && !manifest.files.contains_key(&key) {
            stale.push(key);
        }
    }
    for (key, text) in &files {
        store.put(key, text.clone().into_bytes().into()).await?;
    }
    for key in &stale {
        store.delete(key).await?;
    }
    store
        .put(&manifest_key, serde_json::to_vec(&manifest)?.into())
        .await?;
    println!(
        "pushed revision {} ({} files) to {bucket} on {}",
        manifest.revision,
        files.len(),
        args.bus.shown()
    );
    Ok(ExitCode::SUCCESS)
}
