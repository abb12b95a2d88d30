//! Command-line interface.
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::events::EventKindName;

/// reflex: notices unwanted change on a host and answers it.
#[derive(Debug, Parser)]
#[command(name = "reflex", version, about)]
pub struct Cli {
    /// Log line format (logs go to stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// More log detail (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the agent: load the probes and answer events with the policies.
    Run(RunArgs),
    /// Feed a recorded `reflex events` stream through policies and print the
    /// decisions, carrying out nothing.
    Replay {
        /// File of JSON lines written by `reflex events`.
        #[arg(long)]
        events: PathBuf,
        /// Directory of `*.yaml` policy files.
        #[arg(long)]
        policies: PathBuf,
    },
    /// Validate policy files or directories; report every error as file:line:column.
    Check {
        /// Files or directories of `*.yaml` policies.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show or accept the baselines `revert` policies restore from.
    Baseline {
        /// What to do.
        #[command(subcommand)]
        action: BaselineAction,
        /// Where the agent keeps its state.
        #[arg(long, default_value = "/var/lib/reflex", global = true)]
        state_dir: PathBuf,
    },
    /// Stream every event as one JSON object per line on stdout.
    Events {
        /// Only these kinds (comma-separated), e.g. `exec,exit`.
        #[arg(long, value_delimiter = ',')]
        kind: Vec<EventKindName>,
    },
}

/// Options of `reflex run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Directory of `*.yaml` policy files (reloaded on change and on SIGHUP).
    #[arg(long, default_value = "/etc/reflex/policies")]
    pub policies: PathBuf,
    /// Where alerts, baselines and spools are kept.
    #[arg(long, default_value = "/var/lib/reflex")]
    pub state_dir: PathBuf,
    /// A kill policy that kills more than this many different executables
    /// within a minute stops killing until the next reload.
    #[arg(long, default_value_t = crate::actions::plan::DEFAULT_FUSE_LIMIT)]
    pub kill_fuse: usize,
    /// Hooks allowed to run at once; more are skipped and counted.
    #[arg(long, default_value_t = crate::actions::run::DEFAULT_MAX_HOOKS)]
    pub max_hooks: usize,
    /// Where `/metrics` is served.
    #[arg(long, default_value = crate::telemetry::server::DEFAULT_ADDR)]
    pub metrics_addr: std::net::SocketAddr,
    /// CPU sampling frequency in Hz (0 turns the CPU sensor off).
    #[arg(long, default_value_t = crate::loader::DEFAULT_CPU_HZ)]
    pub cpu_hz: u64,
    /// How often CPU use is computed and `cpu` policies are checked.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub cpu_interval: std::time::Duration,
}

/// `reflex baseline` subcommands.
#[derive(Debug, Subcommand)]
pub enum BaselineAction {
    /// List every recorded baseline.
    List,
    /// Record the current state of a policy's files as their baseline.
    Update {
        /// Policy name.
        policy: String,
        /// Directory of `*.yaml` policy files.
        #[arg(long, default_value = "/etc/reflex/policies")]
        policies: PathBuf,
    },
}
