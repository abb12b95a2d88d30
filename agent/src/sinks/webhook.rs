//! A generic webhook: the alert as JSON in a POST.
use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use crate::policy::value::DurationValue;

/// `alerts.webhooks[]` in the agent's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Sink name (metrics label, spool directory).
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer ...`.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Per request (default 5s).
    #[serde(default)]
    pub timeout: Option<DurationValue>,
}

/// POSTs one alert body; an error status is an error.
pub async fn send(
    client: &reqwest::Client,
    config: &WebhookConfig,
    body: &[u8],
) -> Result<(), String> {
    let mut request = client
        .post(&config.url)
        .timeout(config.timeout.map_or(Duration::from_secs(5), |d| d.0))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in &config.headers {
        request = request.header(name, value);
    }
    if let Some(token) = &config.bearer_token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{} answered {}", config.url, response.status()))
    }
}
