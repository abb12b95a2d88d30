//! `reflex policy push`: a policy directory onto the fleet bus.
use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};

use crate::{
    bus::{BusConfig, push},
    cli::PolicyAction,
    config::{Config, DEFAULT_CONFIG},
};

/// Runs a `reflex policy` subcommand.
pub fn policy(action: &PolicyAction) -> anyhow::Result<ExitCode> {
    let PolicyAction::Push {
        dir,
        bus,
        config,
        bucket,
        key_prefix,
        unchecked,
    } = action;
    let (path, named) = match config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let file = Config::load(&path, named)?;
    let mut settings: BusConfig = match (file.bus, bus) {
        (Some(mut found), Some(url)) => {
            found.url = url.clone();
            found
        }
        (Some(found), None) => found,
        (None, Some(url)) => {
            serde_yaml::from_str(&format!("url: {url:?}")).context("--bus is not a server URL")?
        }
        (None, None) => bail!("no bus: give --bus URL or `bus:` in {}", path.display()),
    };
    let wanted = settings.policies.take().unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(push::push(push::PushArgs {
        dir,
        bus: settings,
        bucket: bucket.clone().or(wanted.bucket),
        key_prefix: key_prefix.clone().or(wanted.key_prefix),
        unchecked: *unchecked,
    }))
}
