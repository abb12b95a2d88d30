//! The configuration's bounds: sizes written as `64MiB`, the `hooks:` and
//! `metrics:` sections, the checks that the bounds fit together, and the
//! refusal of a configuration file that others can read while it holds
//! sink credentials.
use std::{fmt, path::Path, time::Duration};

use serde::{Deserialize, Deserializer, de};

use super::{Config, ConfigError, Located};
use crate::{
    events::reader::DEFAULT_EXEC_FLUSH, policy::value::DurationValue, sinks::alert::MIN_LINE_BYTES,
};

/// A size in bytes: a number, or a number with `B`, `KiB`, `MiB` or `GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `64MiB`, `4 KiB`, `512`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("bad size {text:?}: expected a number such as 64MiB"))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => return Err(format!("bad size unit {other:?}: use B, KiB, MiB or GiB")),
        };
        number
            .checked_mul(scale)
            .map(Self)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 64MiB, 4KiB or 512")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `hooks:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Hooks of one policy running at once (default 4).
    pub max_per_policy: Option<usize>,
    /// Bytes of each output stream kept for the log (default 4KiB).
    pub output_max_bytes: Option<ByteSize>,
}

/// `metrics:` (the endpoint's bounds; its address is `metrics_addr`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Connections open at once (default 64).
    pub max_connections: Option<usize>,
    /// Time to send a request head (default 5s).
    pub header_timeout: Option<DurationValue>,
    /// Time without a byte moving (default 30s).
    pub idle_timeout: Option<DurationValue>,
    /// Time a pipeline stage may spend in one turn before `/healthz` fails
    /// and watchdog pings stop (default 10s).
    pub stall_after: Option<DurationValue>,
}

/// The smallest `event_queue` and `file_queue`: one drain of a family's ring buffer.
const MIN_EVENT_QUEUE: usize = crate::events::reader::DRAIN_MAX;
/// `fs:` (the filesystem worker pool).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// Worker threads (default 4).
    pub threads: Option<usize>,
    /// How long one file's hash, restore or record may take (default 5s).
    pub timeout: Option<DurationValue>,
    /// Threads written off in a hung call that are replaced (default 16).
    pub max_stuck: Option<usize>,
    /// Jobs waiting at most (default 4096).
    pub queue_max: Option<usize>,
}

impl FsConfig {
    /// The bounds in force.
    pub fn settings(&self) -> crate::fsio::pool::PoolSettings {
        let d = crate::fsio::pool::PoolSettings::default();
        crate::fsio::pool::PoolSettings {
            threads: self.threads.unwrap_or(d.threads),
            timeout: self.timeout.map_or(d.timeout, |t| t.0),
            max_stuck: self.max_stuck.unwrap_or(d.max_stuck),
            queue_max: self.queue_max.unwrap_or(d.queue_max),
        }
    }
}

/// Checks that the bounds in force fit together.
pub fn check(path: &Path, settings: &super::Settings) -> Result<(), ConfigError> {
    let line = settings.alert_log.max_line_bytes;
    let problem = if line < MIN_LINE_BYTES {
        Some(format!(
            "alerts.max_line_bytes is {line}; it must be at least {MIN_LINE_BYTES}"
        ))
    } else if settings.alert_log.max_bytes < line as u64 {
        Some("alerts.log_max_bytes must be at least alerts.max_line_bytes".to_string())
    } else if settings.spool.max_bytes < line as u64 {
        Some("alerts.spool_max_bytes must be at least alerts.max_line_bytes".to_string())
    } else if settings.hooks.max == 0 || settings.hooks.max_per_policy == 0 {
        Some("max_hooks and hooks.max_per_policy must be at least 1".to_string())
    } else if settings.metrics_limits.max_connections == 0 {
        Some("metrics.max_connections must be at least 1".to_string())
    } else if settings.event_queue < MIN_EVENT_QUEUE {
        Some(format!(
            "event_queue is {}; it must be at least {MIN_EVENT_QUEUE}",
            settings.event_queue
        ))
    } else if settings.file_queue < MIN_EVENT_QUEUE {
        Some(format!(
            "file_queue is {}; it must be at least {MIN_EVENT_QUEUE}",
            settings.file_queue
        ))
    } else if settings.stage_queue == 0 {
        Some("stage_queue must be at least 1".to_string())
    } else if settings.fs.threads == 0 || settings.fs.queue_max == 0 {
        Some("fs.threads and fs.queue_max must be at least 1".to_string())
    } else if settings.fs.timeout.is_zero() {
        Some("fs.timeout must be more than 0".to_string())
    } else if !EXEC_FLUSH_RANGE.contains(&settings.exec_flush) {
        Some(format!(
            "ring_buffers.exec_flush is {:?}; it must be from 1ms to 1s",
            settings.exec_flush
        ))
    } else if let Some(problem) = settings.bus.as_ref().and_then(|b| b.problem()) {
        Some(problem)
    } else {
        ring_problem(&settings.rings)
    };
    match problem {
        Some(message) => Err(ConfigError::Invalid(Located {
            path: path.to_owned(),
            at: None,
            message,
        })),
        None => Ok(()),
    }
}

/// The first ring buffer size the kernel would refuse, said.
fn ring_problem(rings: &crate::loader::RingSizes) -> Option<String> {
    rings.each().into_iter().find_map(|(family, _, bytes)| {
        (!bytes.is_power_of_two() || !(MIN_RING_BYTES..=MAX_RING_BYTES).contains(&bytes)).then(
            || {
                format!(
                    "ring_buffers.{} is {bytes} bytes; it must be a power of two from 4KiB to 1GiB",
                    family.label()
                )
            },
        )
    })
}

/// Smallest ring buffer: one page.
const MIN_RING_BYTES: u32 = 4 << 10;
/// Largest ring buffer taken here (the kernel's limit is higher; this keeps
/// a typo from pinning gigabytes of kernel memory).
const MAX_RING_BYTES: u32 = 1 << 30;

/// `ring_buffers:`: bytes of each event family's kernel ring buffer. A
/// flood of one family fills only its own; what does not fit is counted in
/// `reflex_events_lost_total{place="kernel",reason="ringbuf_full",family}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingBuffersConfig {
    /// Exec, exit and fork records (default 4MiB).
    pub exec: Option<ByteSize>,
    /// File changes (default 4MiB).
    pub file: Option<ByteSize>,
    /// Connects, accepts, listens (default 2MiB).
    pub connect: Option<ByteSize>,
    /// Longest an exit or fork record waits in its ring buffer before the
    /// agent reads it (default 10ms); see [`DEFAULT_EXEC_FLUSH`].
    pub exec_flush: Option<DurationValue>,
}

/// Bounds of `ring_buffers.exec_flush`.
const EXEC_FLUSH_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(1);

impl RingBuffersConfig {
    /// `exec_flush` in force.
    pub fn exec_flush(&self) -> Duration {
        self.exec_flush.map_or(DEFAULT_EXEC_FLUSH, |d| d.0)
    }

    /// The sizes in force; a size past `u32` becomes one [`check`] refuses.
    pub fn sizes(&self) -> crate::loader::RingSizes {
        let defaults = crate::loader::RingSizes::default();
        let pick = |set: Option<ByteSize>, default: u32| {
            set.map_or(default, |b| u32::try_from(b.0).unwrap_or(u32::MAX))
        };
        crate::loader::RingSizes {
            exec: pick(self.exec, defaults.exec),
            file: pick(self.file, defaults.file),
            connect: pick(self.connect, defaults.connect),
        }
    }
}

/// Refuses `config`, read from `path` with permission bits `mode`, when it
/// holds sink credentials and group or others may read it.
pub fn check_secrets(path: &Path, mode: u32, config: &Config) -> Result<(), ConfigError> {
    let secret = config.alerts.webhooks.iter().any(|w| w.holds_secrets())
        || config
            .alerts
            .alertmanager
            .as_ref()
            .is_some_and(|a| crate::sinks::webhook::url_has_secrets(&a.url))
        || config.bus.as_ref().is_some_and(|b| b.holds_secrets());
    if secret && mode & 0o044 != 0 {
        return Err(ConfigError::Exposed {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("4 KiB").unwrap().0, 4096);
        assert_eq!(ByteSize::parse("512").unwrap().0, 512);
        assert!(ByteSize::parse("64MB").is_err());
        assert!(ByteSize::parse("lots").is_err());
    }

    #[test]
    fn lane_queues_have_floors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reflex.yaml");
        for (text, name) in [
            ("file_queue: 10\n", "file_queue"),
            ("stage_queue: 0\n", "stage_queue"),
        ] {
            std::fs::write(&path, text).unwrap();
            let args = crate::cli::RunArgs {
                config: Some(path.clone()),
                ..Default::default()
            };
            let err = super::super::Settings::resolve(&args).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}

/// `baselines:` in the agent's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselinesConfig {
    /// Earlier versions kept per file (default 10).
    pub history: Option<usize>,
    /// Extended attributes kept per file version (default 64KiB); a file
    /// with more is recorded without them.
    pub max_xattr_bytes: Option<ByteSize>,
}

impl BaselinesConfig {
    /// The bound in force.
    pub fn history(&self) -> usize {
        self.history
            .unwrap_or(crate::settle::file::baseline::DEFAULT_HISTORY)
    }

    /// The bound on extended attributes in force.
    pub fn max_xattr_bytes(&self) -> u64 {
        self.max_xattr_bytes.map_or(
            crate::settle::file::baseline::DEFAULT_MAX_XATTR_BYTES,
            |b| b.0,
        )
    }
}
