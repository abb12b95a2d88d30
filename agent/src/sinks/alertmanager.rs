//! Alertmanager: `POST /api/v2/alerts`, labels `alertname` (the policy),
//! `severity`, `host`, the policy's labels and an `event_id`; annotations
//! with the summary and the event; `endsAt` so the alert resolves.
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::json;

use crate::policy::value::DurationValue;

/// `alerts.alertmanager` in the agent's configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
    /// Per request (default 5s).
    #[serde(default)]
    pub timeout: Option<DurationValue>,
    /// How long after it fired an alert resolves (default 5m).
    #[serde(default)]
    pub resolve_after: Option<DurationValue>,
}

impl std::fmt::Debug for AlertmanagerConfig {
    /// The URL's credentials stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerConfig")
            .field("url", &super::redact::url(&self.url))
            .field("timeout", &self.timeout)
            .field("resolve_after", &self.resolve_after)
            .finish()
    }
}

/// The Alertmanager form of one alert as spooled (JSON, read as a value:
/// an alert cut to its line bound, or a stub of one, is still sent).
pub fn payload(alert: &serde_json::Value, resolve_after: Duration) -> serde_json::Value {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut labels = serde_json::Map::new();
    if let Some(policy_labels) = alert["labels"].as_object() {
        for (k, v) in policy_labels {
            labels.insert(k.clone(), v.clone());
        }
    }
    labels.insert("alertname".into(), alert["policy"].clone());
    labels.insert("severity".into(), alert["severity"].clone());
    labels.insert("host".into(), json!(host));
    labels.insert("mode".into(), alert["mode"].clone());
    // Each decision is its own alert, not a repeat of the last one.
    labels.insert(
        "event_id".into(),
        json!(format!(
            "{}-{}",
            alert["event"]["ktime_ns"], alert["event"]["process"]["pid"]
        )),
    );
    let starts = alert["time"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .unwrap_or_else(SystemTime::now);
    let mut annotations = json!({
        "summary": alert["summary"],
        "event": alert["event"].to_string(),
        "actions": alert.get("results").map(|r| r.to_string()).unwrap_or_default(),
    });
    if let Some(diff) = alert["evidence"]["diff"].as_str() {
        annotations["diff"] = json!(diff);
    }
    json!([{
        "labels": labels,
        "annotations": annotations,
        "startsAt": humantime::format_rfc3339_millis(starts).to_string(),
        "endsAt": humantime::format_rfc3339_millis(starts + resolve_after).to_string(),
    }])
}

/// Sends one spooled alert.
pub async fn send(
    client: &reqwest::Client,
    config: &AlertmanagerConfig,
    body: &[u8],
) -> Result<(), String> {
    let alert: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("spooled alert unreadable: {e}"))?;
    let resolve = config
        .resolve_after
        .map_or(Duration::from_secs(300), |d| d.0);
    let url = format!("{}/api/v2/alerts", config.url.trim_end_matches('/'));
    let response = client
        .post(&url)
        .timeout(config.timeout.map_or(Duration::from_secs(5), |d| d.0))
        .json(&payload(&alert, resolve))
        .send()
        .await
        .map_err(|e| super::redact::error(&e))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "{} answered {}",
            super::redact::url(&url),
            response.status()
        ))
    }
}
