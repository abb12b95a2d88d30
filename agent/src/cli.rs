//! Command-line interface.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::events::Kind;
pub use crate::logging::LogFormat;

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
    /// Log lines waiting for stderr's reader; past it lines are lost
    /// (counted in reflex_log_lines_dropped_total), never waited for.
    #[arg(long, default_value_t = crate::logging::DEFAULT_QUEUE_LINES, global = true, value_name = "LINES")]
    pub log_queue: usize,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
    /// Report what this host offers the probes (BTF, tracefs, program and
    /// map types, cgroup v2, LSM, fentry), load and attach them once, and
    /// say which policies would load and what they lack.
    Doctor {
        /// Configuration file (default /etc/reflex/reflex.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Policy directory (default from the configuration, else /etc/reflex/policies).
        #[arg(long)]
        policies: Option<PathBuf>,
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
    /// Stream every event as one JSON object per line on stdout: the
    /// finished events `reflex run` judges (file changes settled, CPU
    /// thresholds crossed), which `reflex replay` reads back.
    Events {
        /// Only these kinds (comma-separated), e.g. `exec,exit`.
        #[arg(long, value_delimiter = ',')]
        kind: Vec<Kind>,
        /// Policies whose files are watched and whose CPU thresholds are
        /// checked (file and cpu events need them); nothing is enforced.
        #[arg(long)]
        policies: Option<PathBuf>,
        /// CPU sampling frequency in Hz when `cpu` policies are given.
        #[arg(long, default_value_t = 99)]
        cpu_hz: u64,
        /// How often CPU use is computed.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        cpu_interval: std::time::Duration,
        /// `json`: one object per line (what `reflex replay` reads);
        /// `compact`: one human line per event, coloured on a terminal
        /// unless `NO_COLOR` is set.
        #[arg(short, long, value_enum, default_value_t = EventFormat::Json)]
        output: EventFormat,
    },
    /// A live view of a running agent from its `/metrics` and alert log:
    /// policies, probes, events per second, losses, the last decisions and
    /// the sinks. Redrawn every `--interval` until interrupted.
    Status(StatusArgs),
    /// Policies on the fleet bus (NATS JetStream).
    Policy {
        /// What to do.
        #[command(subcommand)]
        action: PolicyAction,
    },
}

/// `reflex policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Check a directory (as `reflex check`) and publish it on the bus as
    /// one revision that agents with `bus.policies` load.
    Push {
        /// Directory of `*.yaml` policy files.
        dir: PathBuf,
        /// Server URL(s) [default: `bus.url` of the configuration].
        #[arg(long)]
        bus: Option<String>,
        /// Configuration whose `bus:` gives credentials, bucket and prefix
        /// [default: /etc/reflex/reflex.yaml, if present].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Bucket [default: `bus.policies.bucket`, else reflex-policies].
        #[arg(long)]
        bucket: Option<String>,
        /// Key prefix [default: `bus.policies.key_prefix`, else none].
        #[arg(long)]
        key_prefix: Option<String>,
        /// Publish even a set with errors (to see agents refuse it).
        #[arg(long)]
        unchecked: bool,
    },
}

/// How `reflex events` prints an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    /// One JSON object per line (what `reflex replay` reads).
    #[default]
    Json,
    /// One human line per event.
    Compact,
}

/// Options of `reflex status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Where the agent serves `/metrics`.
    #[arg(long, default_value = "127.0.0.1:9807")]
    pub metrics_addr: std::net::SocketAddr,
    /// The agent's state directory (its `alerts.jsonl`).
    #[arg(long, default_value = "/var/lib/reflex")]
    pub state_dir: PathBuf,
    /// Time between two reads (rates are over it).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub interval: std::time::Duration,
    /// Print the view once (after two reads, `--interval` apart) and exit:
    /// for scripts. Exits 1 when the agent does not answer.
    #[arg(long)]
    pub once: bool,
    /// Last decisions shown.
    #[arg(long, default_value_t = 5)]
    pub decisions: usize,
}

/// Options of `reflex run`. Each overrides the configuration file, whose
/// values override the defaults shown.
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// The agent's configuration file [default: /etc/reflex/reflex.yaml, if present].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of `*.yaml` policy files, reloaded on change and on SIGHUP
    /// [default: /etc/reflex/policies].
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// Where alerts, baselines and spools are kept [default: /var/lib/reflex].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// A kill policy that kills more than this many different executables
    /// within a minute stops killing until the next reload [default: 5].
    #[arg(long)]
    pub kill_fuse: Option<usize>,
    /// Hooks allowed to run at once; more are skipped and counted [default: 16].
    #[arg(long)]
    pub max_hooks: Option<usize>,
    /// Where `/metrics` is served [default: 127.0.0.1:9807].
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// CPU sampling frequency in Hz, 0 turns the CPU sensor off [default: 99].
    #[arg(long)]
    pub cpu_hz: Option<u64>,
    /// How often CPU use is computed and `cpu` policies are checked [default: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub cpu_interval: Option<std::time::Duration>,
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
    /// Every version of a file's baseline, newest first.
    History {
        /// The watched file.
        path: String,
        /// The policy whose baseline (needed when several keep one).
        #[arg(long)]
        policy: Option<String>,
    },
    /// Unified diff of the file now against its baseline, or between two
    /// versions (`--from`, `--to`: a number or a sha256 prefix).
    Diff {
        /// The watched file.
        path: String,
        /// The policy whose baseline (needed when several keep one).
        #[arg(long)]
        policy: Option<String>,
        /// Old side: a version [default: the baseline in force].
        #[arg(long)]
        from: Option<String>,
        /// New side: a version [default: the file as it is now].
        #[arg(long)]
        to: Option<String>,
    },
    /// Make an earlier version the baseline and restore the file to it.
    Rollback {
        /// The watched file.
        path: String,
        /// The version to go back to: a number or a sha256 prefix.
        #[arg(long)]
        to: String,
        /// The policy whose baseline (needed when several keep one).
        #[arg(long)]
        policy: Option<String>,
    },
}
