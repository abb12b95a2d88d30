//! A generic webhook: the alert as JSON in a POST.
use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use super::redact;
use crate::policy::value::DurationValue;

/// `alerts.webhooks[]` in the agent's configuration.
#[derive(Clone, Deserialize)]
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
    /// The body's form (default `reflex`: the alert as written locally).
    #[serde(default)]
    pub format: Format,
}

/// The form of a webhook's body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The alert JSON as `alerts.jsonl` holds it.
    #[default]
    Reflex,
    /// Falco's alert form, for Falcosidekick ([`super::falcosidekick`]).
    Falcosidekick,
}

impl std::fmt::Debug for WebhookConfig {
    /// The token, header values and the URL's secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: BTreeMap<&str, redact::Hidden> = self
            .headers
            .keys()
            .map(|k| (k.as_str(), redact::Hidden))
            .collect();
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &redact::url(&self.url))
            .field("headers", &headers)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| redact::Hidden),
            )
            .field("timeout", &self.timeout)
            .field("format", &self.format)
            .finish()
    }
}

impl WebhookConfig {
    /// Whether this sink holds a secret: a token, a header value, or
    /// credentials in its URL.
    pub fn holds_secrets(&self) -> bool {
        self.bearer_token.is_some() || !self.headers.is_empty() || url_has_secrets(&self.url)
    }
}

/// Whether `url` carries user info or a query (where tokens go).
pub fn url_has_secrets(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| !u.username().is_empty() || u.password().is_some() || u.query().is_some())
}

/// POSTs one alert body (spooled JSON) in the sink's form; an error status
/// is an error. Errors name the URL redacted.
pub async fn send(
    client: &reqwest::Client,
    config: &WebhookConfig,
    body: &[u8],
) -> Result<(), String> {
    let body = match config.format {
        Format::Reflex => body.to_vec(),
        Format::Falcosidekick => {
            let alert: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| format!("spooled alert unreadable: {e}"))?;
            let host = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default();
            serde_json::to_vec(&super::falcosidekick::payload(&alert, &host))
                .map_err(|e| format!("encoding the Falco form: {e}"))?
        }
    };
    let mut request = client
        .post(&config.url)
        .timeout(config.timeout.map_or(Duration::from_secs(5), |d| d.0))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in &config.headers {
        request = request.header(name, value);
    }
    if let Some(token) = &config.bearer_token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| redact::error(&e))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "{} answered {}",
            redact::url(&config.url),
            response.status()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token_and_the_url_secrets() {
        let config = WebhookConfig {
            name: "ops".into(),
            url: "https://u:p@hooks.example/x?token=t0k3n".into(),
            headers: BTreeMap::from([("X-Api-Key".into(), "k3y".into())]),
            bearer_token: Some("s3cret".into()),
            timeout: None,
            format: Format::Reflex,
        };
        let shown = format!("{config:?}");
        for secret in ["s3cret", "k3y", "t0k3n", "u:p", "/x"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("X-Api-Key") && shown.contains("hooks.example"));
        assert!(config.holds_secrets());
    }
}
