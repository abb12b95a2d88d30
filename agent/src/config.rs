//! The agent's own settings: one YAML file (`--config`, default
//! `/etc/reflex/reflex.yaml`), every field optional, unknown fields
//! rejected with file:line:column; command-line flags override it. A file
//! that holds sink credentials must be readable by its owner only.
pub mod bounds;

use std::{
    fmt,
    io::Read as _,
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    actions::run::{DEFAULT_MAX_HOOKS, HookLimits},
    cli::RunArgs,
    engine::plan::DEFAULT_FUSE_LIMIT,
    loader::DEFAULT_CPU_HZ,
    policy::value::DurationValue,
    sinks::{
        SpoolBounds, alert::LogBounds, alertmanager::AlertmanagerConfig, webhook::WebhookConfig,
    },
    telemetry::server::{DEFAULT_ADDR, ServerLimits},
};
use bounds::{ByteSize, HooksConfig, MetricsConfig};

/// Descriptors kept free by default for reverts, kills, hooks and spools.
pub const DEFAULT_DESCRIPTOR_RESERVE: usize = 256;

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
    /// Other bounds on hooks.
    #[serde(default)]
    pub hooks: HooksConfig,
    /// Bounds of the metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Descriptors kept free for reverts, kills, hooks and spools (default 256).
    pub descriptor_reserve: Option<usize>,
    /// Bulk records waiting between the sensor and the settler (default 16 384).
    pub event_queue: Option<usize>,
    /// File records waiting between the sensor and the settler (default 16 384).
    pub file_queue: Option<usize>,
    /// Items waiting for the engine and for actions, per lane (default 1 024).
    pub stage_queue: Option<usize>,
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
    pub baselines: bounds::BaselinesConfig,
    /// What reverts keep of the content they reject.
    #[serde(default)]
    pub evidence: crate::actions::evidence::EvidenceConfig,
    /// The kernel's file watch maps.
    #[serde(default)]
    pub watch: crate::settle::file::watch::capacity::WatchConfig,
    /// The connect filter's kernel tries.
    #[serde(default)]
    pub connect_filter: crate::blocks::room::ConnectFilterConfig,
    /// Bytes of each event family's kernel ring buffer.
    #[serde(default)]
    pub ring_buffers: bounds::RingBuffersConfig,
    /// The filesystem worker pool.
    #[serde(default)]
    pub fs: bounds::FsConfig,
    /// The fleet bus (NATS JetStream): decisions are published there.
    #[serde(default)]
    pub bus: Option<crate::bus::BusConfig>,
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
    /// Bytes of alerts each remote sink keeps on disk (default 32MiB).
    pub spool_max_bytes: Option<ByteSize>,
    /// Bytes one alert line may take (default 16KiB).
    pub max_line_bytes: Option<ByteSize>,
    /// Size at which `alerts.jsonl` is rotated (default 64MiB).
    pub log_max_bytes: Option<ByteSize>,
    /// Rotated alert logs kept besides the live one (default 5).
    pub log_keep: Option<usize>,
    /// Alert lines waiting for stdout's reader (default 1024).
    pub stdout_queue: Option<usize>,
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
    /// The file holds sink credentials and others may read it.
    #[error(
        "{path} holds alert sink credentials (a bearer token, headers, or a URL with user info or a query) and group or others may read it (mode {mode:04o}); run `chmod 600 {path}` and keep it owned by root"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
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
    /// A file that holds sink credentials is refused when group or others
    /// may read it.
    pub fn load(path: &Path, named: bool) -> Result<Self, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
                return Ok(Self::default());
            }
            Err(source) => return Err(read_error(source)),
        };
        // The mode of the file read, not of whatever is at the path later.
        let mode = file.metadata().map_err(read_error)?.mode();
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read_error)?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config = Self::parse(path, &text)?;
        bounds::check_secrets(path, mode, &config)?;
        Ok(config)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|e| {
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
    /// Bounds on hooks.
    pub hooks: HookLimits,
    /// Bounds of the metrics endpoint.
    pub metrics_limits: ServerLimits,
    /// A stage busy this long in one turn is stalled.
    pub stall_after: std::time::Duration,
    /// Descriptors kept free for reverts, kills, hooks and spools.
    pub descriptor_reserve: usize,
    /// Bulk records waiting between the sensor and the settler.
    pub event_queue: usize,
    /// File records waiting between the sensor and the settler.
    pub file_queue: usize,
    /// Items waiting for the engine and for actions, per lane.
    pub stage_queue: usize,
    /// CPU sampling frequency (0: off).
    pub cpu_hz: u64,
    /// CPU evaluation interval.
    pub cpu_interval: Duration,
    /// Alerts on stdout.
    pub alerts_stdout: bool,
    /// Bounds of the alert log.
    pub alert_log: LogBounds,
    /// Bounds of each sink's spool.
    pub spool: SpoolBounds,
    /// Webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// Alertmanager.
    pub alertmanager: Option<AlertmanagerConfig>,
    /// Ancestors kept per process.
    pub ancestry_depth: usize,
    /// cgroups whose identity is kept.
    pub cgroup_cache: usize,
    /// Earlier baseline versions kept per file.
    pub baseline_history: usize,
    /// Bytes of extended attributes kept per baseline version.
    pub baseline_max_xattr_bytes: u64,
    /// Bounds of revert evidence.
    pub evidence: crate::actions::evidence::EvidenceSettings,
    /// Ceilings of the kernel's file watch maps.
    pub watch: crate::settle::file::watch::capacity::WatchBounds,
    /// Ceiling of each connect filter trie, in prefixes.
    pub max_prefixes: u32,
    /// Bytes of each family's kernel ring buffer.
    pub rings: crate::loader::RingSizes,
    /// Longest an exec-family record waits in its ring buffer unread.
    pub exec_flush: Duration,
    /// The filesystem worker pool.
    pub fs: crate::fsio::pool::PoolSettings,
    /// The fleet bus.
    pub bus: Option<crate::bus::BusConfig>,
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
        let hooks = HookLimits::default();
        let server = ServerLimits::default();
        let log = LogBounds::default();
        let spool = SpoolBounds::default();
        let settings = Self {
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
            hooks: HookLimits {
                max: args
                    .max_hooks
                    .or(file.max_hooks)
                    .unwrap_or(DEFAULT_MAX_HOOKS),
                max_per_policy: file.hooks.max_per_policy.unwrap_or(hooks.max_per_policy),
                output_max_bytes: file
                    .hooks
                    .output_max_bytes
                    .map_or(hooks.output_max_bytes, |b| b.0 as usize),
            },
            metrics_limits: ServerLimits {
                max_connections: file
                    .metrics
                    .max_connections
                    .unwrap_or(server.max_connections),
                header_timeout: file
                    .metrics
                    .header_timeout
                    .map_or(server.header_timeout, |d| d.0),
                idle_timeout: file
                    .metrics
                    .idle_timeout
                    .map_or(server.idle_timeout, |d| d.0),
            },
            stall_after: file
                .metrics
                .stall_after
                .map_or(crate::telemetry::alive::DEFAULT_STALL_AFTER, |d| d.0),
            descriptor_reserve: file
                .descriptor_reserve
                .unwrap_or(DEFAULT_DESCRIPTOR_RESERVE),
            event_queue: file
                .event_queue
                .unwrap_or(crate::sensor::DEFAULT_EVENT_QUEUE),
            file_queue: file
                .file_queue
                .unwrap_or(crate::sensor::DEFAULT_EVENT_QUEUE),
            stage_queue: file
                .stage_queue
                .unwrap_or(crate::lanes::DEFAULT_STAGE_QUEUE),
            cpu_hz: args.cpu_hz.or(file.cpu.hz).unwrap_or(DEFAULT_CPU_HZ),
            cpu_interval: args
                .cpu_interval
                .or(file.cpu.interval.map(|d| d.0))
                .unwrap_or(Duration::from_secs(1)),
            alerts_stdout: file.alerts.stdout.unwrap_or(true),
            alert_log: LogBounds {
                max_line_bytes: file
                    .alerts
                    .max_line_bytes
                    .map_or(log.max_line_bytes, |b| b.0 as usize),
                max_bytes: file.alerts.log_max_bytes.map_or(log.max_bytes, |b| b.0),
                keep: file.alerts.log_keep.unwrap_or(log.keep),
                stdout_queue: file.alerts.stdout_queue.unwrap_or(log.stdout_queue),
            },
            spool: SpoolBounds {
                max_entries: file.alerts.spool_max.unwrap_or(spool.max_entries),
                max_bytes: file.alerts.spool_max_bytes.map_or(spool.max_bytes, |b| b.0),
            },
            webhooks: file.alerts.webhooks,
            alertmanager: file.alerts.alertmanager,
            ancestry_depth: file.process.depth(),
            cgroup_cache: file.process.cgroup_cache(),
            baseline_history: file.baselines.history(),
            baseline_max_xattr_bytes: file.baselines.max_xattr_bytes(),
            evidence: crate::actions::evidence::EvidenceSettings::from_config(&file.evidence),
            watch: file.watch.bounds(),
            max_prefixes: file.connect_filter.max_prefixes(),
            rings: file.ring_buffers.sizes(),
            exec_flush: file.ring_buffers.exec_flush(),
            fs: file.fs.settings(),
            bus: file.bus,
        };
        bounds::check(&path, &settings)?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests;
