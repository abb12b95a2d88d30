//! The agent's own settings: one YAML file (`--config`, default
//! `/etc/reflex/reflex.yaml`), every field optional, unknown fields
//! rejected with file:line:column; command-line flags override it.
use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    actions::run::DEFAULT_MAX_HOOKS,
    cli::RunArgs,
    engine::plan::DEFAULT_FUSE_LIMIT,
    loader::DEFAULT_CPU_HZ,
    policy::value::DurationValue,
    sinks::{DEFAULT_SPOOL_ENTRIES, alertmanager::AlertmanagerConfig, webhook::WebhookConfig},
    telemetry::server::DEFAULT_ADDR,
};

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/reflex/reflex.yaml";

/// The configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Policy directory (default `/etc/reflex/policies`).
    pub policies: Option<PathBuf>,
    /// State directory: alerts, baselines, spools (default `/var/lib/reflex`).
    pub state_dir: Option<PathBuf>,
    /// Where `/metrics` is served (default `127.0.0.1:9807`).
    pub metrics_addr: Option<String>,
    /// Distinct executables a kill policy may kill in a minute (default 5).
    pub kill_fuse: Option<usize>,
    /// Hooks running at once (default 16).
    pub max_hooks: Option<usize>,
    /// The CPU sensor.
    #[serde(default)]
    pub cpu: CpuConfig,
    /// Alert delivery.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The process table.
    #[serde(default)]
    pub process: crate::process::lineage::ProcessConfig,
    /// The baseline store.
    #[serde(default)]
    pub baselines: crate::settle::file::baseline::BaselinesConfig,
    /// What reverts keep of the content they reject.
    #[serde(default)]
    pub evidence: crate::actions::evidence::EvidenceConfig,
}

/// `cpu:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuConfig {
    /// Sampling frequency in Hz, 0 for off (default 99).
    pub hz: Option<u64>,
    /// Evaluation interval (default 1s).
    pub interval: Option<DurationValue>,
}

/// `alerts:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Also print alerts on stdout (default true).
    pub stdout: Option<bool>,
    /// Alerts each remote sink keeps on disk while it is down (default 10 000).
    pub spool_max: Option<usize>,
    /// Generic webhooks.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Alertmanager.
    pub alertmanager: Option<AlertmanagerConfig>,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{0}")]
    Invalid(Located),
}

/// A configuration mistake with its place.
#[derive(Debug)]
pub struct Located {
    /// The file.
    pub path: PathBuf,
    /// Line and column, when known.
    pub at: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((l, c)) => write!(f, "{}:{l}:{c}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl Config {
    /// Reads `path`; a missing file is an empty configuration unless the
    /// operator named it.
    pub fn load(path: &Path, named: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(&text).map_err(|e| {
            let (message, _) = crate::policy::checked::split_location(&e.to_string());
            ConfigError::Invalid(Located {
                path: path.to_owned(),
                at: e.location().map(|l| (l.line(), l.column())),
                message,
            })
        })
    }
}

/// Settings in force: flags over the file over defaults.
#[derive(Debug)]
pub struct Settings {
    /// Policy directory.
    pub policies: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// `/metrics` address.
    pub metrics_addr: SocketAddr,
    /// Kill fuse limit.
    pub kill_fuse: usize,
    /// Concurrent hooks.
    pub max_hooks: usize,
    /// CPU sampling frequency (0: off).
    pub cpu_hz: u64,
    /// CPU evaluation interval.
    pub cpu_interval: Duration,
    /// Alerts on stdout.
    pub alerts_stdout: bool,
    /// Spool bound per sink.
    pub spool_max: usize,
    /// Webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// Alertmanager.
    pub alertmanager: Option<AlertmanagerConfig>,
    /// Ancestors kept per process.
    pub ancestry_depth: usize,
    /// Earlier baseline versions kept per file.
    pub baseline_history: usize,
    /// Bounds of revert evidence.
    pub evidence: crate::actions::evidence::EvidenceSettings,
}

impl Settings {
    /// Merges `args` over the configuration file they name.
    pub fn resolve(args: &RunArgs) -> anyhow::Result<Self> {
        let (path, named) = match &args.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let file = Config::load(&path, named)?;
        let metrics_addr = match (&args.metrics_addr, &file.metrics_addr) {
            (Some(a), _) => *a,
            (None, Some(text)) => text.parse().map_err(|_| {
                ConfigError::Invalid(Located {
                    path: path.clone(),
                    at: None,
                    message: format!(
                        "metrics_addr {text:?} is not an address such as 127.0.0.1:9807"
                    ),
                })
            })?,
            (None, None) => DEFAULT_ADDR.parse().expect("default address"),
        };
        Ok(Self {
            policies: args
                .policies
                .clone()
                .or(file.policies)
                .unwrap_or_else(|| PathBuf::from("/etc/reflex/policies")),
            state_dir: args
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from("/var/lib/reflex")),
            metrics_addr,
            kill_fuse: args
                .kill_fuse
                .or(file.kill_fuse)
                .unwrap_or(DEFAULT_FUSE_LIMIT),
            max_hooks: args
                .max_hooks
                .or(file.max_hooks)
                .unwrap_or(DEFAULT_MAX_HOOKS),
            cpu_hz: args.cpu_hz.or(file.cpu.hz).unwrap_or(DEFAULT_CPU_HZ),
            cpu_interval: args
                .cpu_interval
                .or(file.cpu.interval.map(|d| d.0))
                .unwrap_or(Duration::from_secs(1)),
            alerts_stdout: file.alerts.stdout.unwrap_or(true),
            spool_max: file.alerts.spool_max.unwrap_or(DEFAULT_SPOOL_ENTRIES),
            webhooks: file.alerts.webhooks,
            alertmanager: file.alerts.alertmanager,
            ancestry_depth: file.process.depth(),
            baseline_history: file.baselines.history(),
            evidence: crate::actions::evidence::EvidenceSettings::from_config(&file.evidence),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected_with_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reflex.yaml");
        std::fs::write(
            &path,
            "state_dir: /tmp/x\nalerts:\n  stdout: true\n  colour: red\n",
        )
        .unwrap();
        let err = Config::load(&path, true).unwrap_err().to_string();
        assert!(err.contains("reflex.yaml:4:3:"), "{err}");
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn a_missing_default_file_is_empty_but_a_named_one_is_an_error() {
        let missing = Path::new("/nonexistent/reflex.yaml");
        assert!(Config::load(missing, false).is_ok());
        assert!(Config::load(missing, true).is_err());
    }

    #[test]
    fn sinks_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reflex.yaml");
        std::fs::write(
            &path,
            "alerts:\n  webhooks:\n    - { name: ops, url: 'http://127.0.0.1:1/x', bearer_token: t, timeout: 2s }\n  alertmanager: { url: 'http://127.0.0.1:9093', resolve_after: 10m }\n",
        )
        .unwrap();
        let config = Config::load(&path, true).unwrap();
        assert_eq!(config.alerts.webhooks[0].name, "ops");
        assert!(config.alerts.alertmanager.is_some());
    }

    #[test]
    fn the_packaged_file_states_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "").unwrap();
        let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/reflex.yaml");
        let resolve = |config: &Path| {
            let args = RunArgs {
                config: Some(config.to_owned()),
                ..RunArgs::default()
            };
            format!("{:?}", Settings::resolve(&args).unwrap())
        };
        assert_eq!(resolve(&packaged), resolve(&empty));
    }
}
