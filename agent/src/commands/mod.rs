//! One module per subcommand; `dispatch` runs the chosen one.
pub mod baseline;
pub mod check;
pub mod compact;
pub mod descriptors;
pub mod doctor;
pub mod events;
mod hangup;
pub mod policy;
pub mod replay;
pub mod run;
mod shutdown;
pub mod state;
pub mod status;
pub mod versions;

use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{BaselineAction, Command, RunArgs};

/// Runs `command` on a fresh tokio runtime and returns the process exit code.
pub fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match &command {
        Command::Check { paths } => return Ok(check::check(paths)),
        Command::Doctor { config, policies } => {
            let args = RunArgs {
                config: config.clone(),
                policies: policies.clone(),
                ..RunArgs::default()
            };
            return doctor::doctor(&args);
        }
        Command::Replay { events, policies } => return replay::replay(events, policies),
        Command::Baseline { action, state_dir } => {
            return match action {
                BaselineAction::List => baseline::list(state_dir),
                BaselineAction::Update { policy, policies } => {
                    baseline::update(state_dir, policies, policy)
                }
                BaselineAction::History { path, policy } => {
                    versions::history(state_dir, path, policy.as_deref())
                }
                BaselineAction::Diff {
                    path,
                    policy,
                    from,
                    to,
                } => versions::diff(state_dir, path, policy.as_deref(), from, to),
                BaselineAction::Rollback { path, to, policy } => {
                    versions::rollback(state_dir, path, policy.as_deref(), to)
                }
            };
        }
        Command::Status(args) => return status::status(args),
        Command::Policy { action } => return policy::policy(action),
        Command::Run(_) | Command::Events { .. } => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Run(args) => run::run(&args).await,
            Command::Events {
                kind,
                policies,
                cpu_hz,
                cpu_interval,
                output,
            } => {
                let options = events::EventsOptions {
                    kinds: kind,
                    policies,
                    cpu_hz,
                    cpu_interval,
                    format: output,
                };
                events::events(&options).await
            }
            Command::Check { .. }
            | Command::Doctor { .. }
            | Command::Replay { .. }
            | Command::Status(_)
            | Command::Policy { .. }
            | Command::Baseline { .. } => {
                unreachable!("handled without a runtime")
            }
        }
    })
}
