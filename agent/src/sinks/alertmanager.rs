//! Alertmanager: `POST /api/v2/alerts`, labels `alertname` (the policy),
//! `severity`, `host`, the policy's labels and an `event_id`; annotations
//! with the summary and the event; `endsAt` so the alert resolves.
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::json;

use super::alert::Alert;
use crate::policy::value::DurationValue;

/// `alerts.alertmanager` in the agent's configuration.
#[derive(Clone, Debug, Deserialize)]
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

/// The Alertmanager form of one alert.
pub fn payload(alert: &Alert, resolve_after: Duration) -> serde_json::Value {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut labels = serde_json::Map::new();
    for (k, v) in &alert.labels {
        labels.insert(k.clone(), json!(v));
    }
    labels.insert("alertname".into(), json!(alert.decision.policy));
    labels.insert("severity".into(), json!(alert.severity));
    labels.insert("host".into(), json!(host));
    labels.insert("mode".into(), json!(alert.decision.mode));
    // Each decision is its own alert, not a repeat of the last one.
    labels.insert(
        "event_id".into(),
        json!(format!(
            "{}-{}",
            alert.event.ktime_ns, alert.event.process.pid
        )),
    );
    let starts = humantime::parse_rfc3339_weak(&alert.time).unwrap_or_else(|_| SystemTime::now());
    let mut annotations = json!({
        "summary": alert.summary,
        "event": serde_json::to_string(&alert.event).unwrap_or_default(),
        "actions": serde_json::to_string(&alert.results).unwrap_or_default(),
    });
    if let Some(diff) = alert.evidence.as_ref().and_then(|e| e.diff.as_ref()) {
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
    let alert: Alert =
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
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", response.status()))
    }
}
