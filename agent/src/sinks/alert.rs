//! `alert`: the decision as one JSON object per line, on stdout and in
//! `alerts.jsonl` under the state directory.
use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{engine::plan::Decision, events::Record, policy::spec::Severity};

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

/// Appends one whole line: a write cut short (no space left) is cut back
/// off so that the next alert starts on a line of its own.
fn append_line(file: &mut File, line: &[u8]) -> io::Result<()> {
    let before = file.metadata()?.len();
    file.write_all(line).inspect_err(|_| {
        let _ = file.set_len(before);
    })
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

/// Where alerts are written: stdout, the local file, and remote sinks.
pub struct AlertLog {
    stdout: bool,
    file: Option<(PathBuf, File)>,
    remote: Vec<super::RemoteSink>,
    dropped: Option<prometheus::IntCounter>,
}

impl AlertLog {
    /// Writes to stdout when `stdout`, and appends to `STATE_DIR/alerts.jsonl`.
    pub fn open(state_dir: &Path, stdout: bool) -> io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join("alerts.jsonl");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            stdout,
            file: Some((path, file)),
            remote: Vec::new(),
            dropped: None,
        })
    }

    /// Also hands every alert to `sink`.
    pub fn with_remote(mut self, sink: super::RemoteSink) -> Self {
        self.remote.push(sink);
        self
    }

    /// Counts alerts the local file could not take (a full disk, say) in
    /// `reflex_alerts_dropped_total{sink="alert_log",reason="write"}`.
    pub fn with_metrics(mut self, metrics: &crate::telemetry::Metrics) -> Self {
        let counter = metrics
            .alerts_dropped
            .with_label_values(&["alert_log", "write"]);
        self.dropped = Some(counter);
        self
    }

    /// A log that writes nowhere (replay, tests).
    pub fn discard() -> Self {
        Self {
            stdout: false,
            file: None,
            remote: Vec::new(),
            dropped: None,
        }
    }

    /// Writes `alert`; a failing destination is logged, not fatal.
    pub fn write(&mut self, alert: &Alert) {
        let mut line = match serde_json::to_vec(alert) {
            Ok(line) => line,
            Err(err) => {
                tracing::error!(%err, "encoding an alert");
                return;
            }
        };
        line.push(b'\n');
        if self.stdout {
            let mut out = io::stdout().lock();
            if let Err(err) = out.write_all(&line).and_then(|_| out.flush()) {
                tracing::warn!(%err, "writing an alert to stdout");
            }
        }
        if let Some((path, file)) = &mut self.file
            && let Err(err) = append_line(file, &line)
        {
            if let Some(dropped) = &self.dropped {
                dropped.inc();
            }
            tracing::error!(%err, path = %path.display(), "writing an alert; it is not in the alert log");
        }
        for sink in &self.remote {
            sink.push(&line[..line.len() - 1]);
        }
    }
}
