//! Running child commands with their command line echoed.
use std::{
    ffi::OsStr,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Runs `cargo ARGS` with the cargo that runs xtask; fails on non-zero exit.
pub fn cargo(args: &[&str]) -> Result<()> {
    cargo_with_env(args, &[])
}

/// Like [`cargo`] with extra environment variables.
pub fn cargo_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).envs(env.iter().copied());
    status(&mut command)
}

/// Runs `command`, echoing it, and fails on a non-zero exit.
pub fn status(command: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", describe(command));
    let status = command
        .status()
        .with_context(|| format!("starting {}", describe(command)))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(command));
    }
    Ok(())
}

/// Runs `program` and returns its stdout, or `None` if it cannot run or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces this process with `program ARGS` (the agent gets the terminal's signals).
pub fn exec(program: impl AsRef<Path>, args: &[String]) -> Result<()> {
    let program = program.as_ref();
    let mut command = Command::new(program);
    command.args(args);
    eprintln!("xtask: $ {}", describe(&command));
    let err = command.exec();
    Err(err).with_context(|| format!("executing {}", program.display()))
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}
