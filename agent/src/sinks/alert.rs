//! `alert`: the decision as one JSON object per line, on stdout and in
//! `alerts.jsonl` under the state directory, each line at most
//! `alerts.max_line_bytes`.
use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use super::{logfile::RotatingFile, stdout::StdoutLines};
use crate::{
    engine::plan::Decision,
    events::Record,
    limits::{self, Fit, LogEvery},
    policy::spec::Severity,
    telemetry::Metrics,
};

/// Bytes an alert line may take by default.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 10;

/// Smallest line bound accepted: a stub alert always fits.
pub const MIN_LINE_BYTES: usize = 4 << 10;

/// The `component` label of the local alert file.
const COMPONENT: &str = "alert_log";

/// One reported decision.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Alert {
    /// When the agent decided (RFC 3339).
    pub time: String,
    /// The decision: policy, mode, actions, would, suppressed.
    #[serde(flatten)]
    pub decision: Decision,
    /// Severity label.
    pub severity: Severity,
    /// Rendered summary.
    pub summary: String,
    /// Policy labels.
    pub labels: BTreeMap<String, String>,
    /// What each action carried out did.
    pub results: Vec<ActionResult>,
    /// The event, with its process context.
    pub event: Record,
    /// What a revert rejected: its hash, where it is kept, a short diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// The content a revert replaced, as the alert reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The file.
    pub path: String,
    /// SHA-256 of the rejected content, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Its size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Where a copy is kept (under the state directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
    /// Unified diff from the baseline to the rejected content, cut at
    /// `evidence.diff_lines` (text files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Whether the diff was cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub diff_truncated: bool,
    /// Why something is missing (hash-only, too large, not text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The outcome of one action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// Action name.
    pub action: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// What happened, for people.
    pub detail: String,
}

/// Bounds of the alert log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBounds {
    /// Bytes one alert line may take.
    pub max_line_bytes: usize,
    /// Size at which `alerts.jsonl` is rotated.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
    /// Lines waiting for stdout's reader.
    pub stdout_queue: usize,
}

impl Default for LogBounds {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_bytes: super::logfile::DEFAULT_MAX_BYTES,
            keep: super::logfile::DEFAULT_KEEP,
            stdout_queue: super::stdout::DEFAULT_QUEUE,
        }
    }
}

/// Where alerts are written: stdout, the local file, and remote sinks.
pub struct AlertLog {
    stdout: Option<StdoutLines>,
    file: Option<RotatingFile>,
    /// Why the file could not be opened at start, until it is.
    unopened: Option<String>,
    max_line_bytes: usize,
    remote: Vec<super::RemoteSink>,
    metrics: Option<Metrics>,
    /// A full disk fails every alert: logged now and then, all counted.
    error_log: LogEvery,
}

/// How often repeated write failures are logged.
const ERROR_LOG_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

impl AlertLog {
    /// Writes to stdout when `stdout`, and appends to `STATE_DIR/alerts.jsonl`
    /// within `bounds`. A file that cannot be opened is reported (once
    /// metrics are attached) and opened again at each alert.
    pub fn open(state_dir: &Path, stdout: bool, bounds: LogBounds) -> Self {
        let path = state_dir.join("alerts.jsonl");
        let (file, opened) = RotatingFile::open(&path, bounds.max_bytes, bounds.keep);
        let unopened = opened.err().map(|err| {
            tracing::error!(%err, path = %path.display(), "opening the alert log; retried at each alert");
            err.to_string()
        });
        let stdout = stdout
            .then(|| match StdoutLines::start(bounds.stdout_queue) {
                Ok(lines) => Some(lines),
                Err(err) => {
                    tracing::error!(%err, "starting the stdout writer; alerts are not printed");
                    None
                }
            })
            .flatten();
        Self {
            stdout,
            file: Some(file),
            unopened,
            max_line_bytes: bounds.max_line_bytes.max(MIN_LINE_BYTES),
            remote: Vec::new(),
            metrics: None,
            error_log: LogEvery::new(ERROR_LOG_PERIOD),
        }
    }

    /// Also hands every alert to `sink`.
    pub fn with_remote(mut self, sink: super::RemoteSink) -> Self {
        self.remote.push(sink);
        self
    }

    /// Counts alerts the local file could not take (a full disk, say) in
    /// `reflex_alerts_dropped_total{sink="alert_log",reason="write"}`, cut
    /// alerts, rotations and the file's size.
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        metrics
            .alerts_dropped
            .with_label_values(&[COMPONENT, "write"]);
        let full = metrics
            .alerts_dropped
            .with_label_values(&["stdout", "full"]);
        let failed = metrics
            .alerts_dropped
            .with_label_values(&["stdout", "write"]);
        self.stdout = self
            .stdout
            .take()
            .map(|lines| lines.with_dropped(full, failed));
        match &self.unopened {
            Some(why) => metrics.health.down(COMPONENT, why),
            None => metrics.health.up(COMPONENT),
        }
        self.metrics = Some(metrics.clone());
        self
    }

    /// A log that writes nowhere (replay, tests).
    pub fn discard() -> Self {
        Self {
            stdout: None,
            file: None,
            unopened: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            remote: Vec::new(),
            metrics: None,
            error_log: LogEvery::new(ERROR_LOG_PERIOD),
        }
    }

    /// Opens `alerts.jsonl` again (SIGHUP, after an external logrotate).
    pub fn reopen(&mut self) {
        let Some(file) = &mut self.file else { return };
        match file.reopen() {
            Ok(()) => {
                tracing::info!(path = %file.path().display(), "alert log reopened");
                if let Some(m) = &self.metrics {
                    m.health.up(COMPONENT);
                }
            }
            Err(err) => {
                tracing::error!(%err, path = %file.path().display(), "reopening the alert log");
                if let Some(m) = &self.metrics {
                    m.health.down(COMPONENT, &err.to_string());
                }
            }
        }
    }

    /// Writes `alert`, cut to the line bound; a failing destination is
    /// logged and counted, not fatal.
    pub fn write(&mut self, alert: &Alert) {
        let mut line = match self.encode(alert) {
            Ok(line) => line,
            Err(err) => {
                tracing::error!(%err, "encoding an alert");
                return;
            }
        };
        line.push(b'\n');
        if let Some(stdout) = &self.stdout {
            stdout.push(line.clone());
        }
        if let Some(file) = &mut self.file {
            let appended = file.append(&line);
            if let Some(m) = &self.metrics {
                match &appended {
                    Ok(done) => {
                        m.limits.alert_log_bytes.set(done.size as i64);
                        if done.rotated {
                            m.limits.alert_log_rotations.inc();
                        }
                        m.health.up(COMPONENT);
                    }
                    Err(err) => {
                        m.alerts_dropped
                            .with_label_values(&[COMPONENT, "write"])
                            .inc();
                        m.health.stuck(COMPONENT, &err.to_string());
                    }
                }
            }
            if let Err(err) = appended
                && let Some(held) = self.error_log.pass()
            {
                tracing::error!(%err, path = %file.path().display(), earlier_unlogged = held, "writing an alert; it is not in the alert log (counted in reflex_alerts_dropped_total)");
            }
        }
        for sink in &self.remote {
            sink.push(&line[..line.len() - 1]);
        }
    }

    /// The alert as JSON of at most `max_line_bytes - 1` bytes: long
    /// strings, arrays and maps cut (`"truncated": true`), or a stub that
    /// names the policy and the process when even that is not enough.
    fn encode(&self, alert: &Alert) -> serde_json::Result<Vec<u8>> {
        let mut value = serde_json::to_value(alert)?;
        let max = self.max_line_bytes - 1;
        let fit = limits::fit(&mut value, max);
        if fit != Fit::Whole {
            if let Some(m) = &self.metrics {
                m.limits.truncated("alert").inc();
            }
            if fit == Fit::Over {
                value = stub(alert);
            }
            value["truncated"] = serde_json::Value::Bool(true);
        }
        serde_json::to_vec(&value)
    }
}

/// What is left of an alert too large to cut: who decided what about whom.
fn stub(alert: &Alert) -> serde_json::Value {
    let cut = |s: &str| {
        let mut s = s.to_string();
        limits::truncate(&mut s, 256);
        s
    };
    let process = &alert.event.process;
    serde_json::json!({
        "time": alert.time,
        "policy": cut(&alert.decision.policy),
        "mode": alert.decision.mode,
        "severity": alert.severity,
        "summary": cut(&alert.summary),
        "event": {
            "time": alert.event.time,
            "ktime_ns": alert.event.ktime_ns,
            "kind": alert.event.kind,
            "process": {
                "pid": process.pid,
                "ppid": process.ppid,
                "uid": process.uid,
                "comm": cut(&process.comm),
                "exe": process.exe.as_deref().map(cut),
            },
        },
    })
}
