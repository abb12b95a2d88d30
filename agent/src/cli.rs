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
    Run {
        /// Directory of `*.yaml` policy files.
        #[arg(long, default_value = "/etc/reflex/policies")]
        policies: PathBuf,
    },
    /// Validate policy files or directories; report every error as file:line:column.
    Check {
        /// Files or directories of `*.yaml` policies.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Stream every event as one JSON object per line on stdout.
    Events {
        /// Only these kinds (comma-separated), e.g. `exec,exit`.
        #[arg(long, value_delimiter = ',')]
        kind: Vec<EventKindName>,
    },
}
