//! The fleet bus: a NATS server with JetStream. `bus:` in `reflex.yaml`
//! says where it is and how to authenticate; the alert sink
//! (`sinks::bus`) publishes decisions on it. Secrets (a token, an nkey
//! seed, user info in the URL) never reach logs: [`BusConfig`]'s `Debug`
//! and every error shown name the server by scheme, host and port only.
use std::{fmt, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::policy::value::DurationValue;

pub mod feed;
pub mod push;
pub mod revision;

/// Default subject prefix (`PREFIX.HOST.FAMILY.KIND`).
pub const DEFAULT_PREFIX: &str = "reflex";

/// Default JetStream stream holding `PREFIX.>`.
pub const DEFAULT_STREAM: &str = "REFLEX";

/// Default wait for a publish acknowledgement.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Default de-duplication window of a stream the agent creates.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(120);

/// Default wait for a connection to the server.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `bus:` in the agent's configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Server URL(s), comma-separated: `nats://host:4222`, `tls://…`.
    pub url: String,
    /// First subject token (default `reflex`).
    #[serde(default)]
    pub subject_prefix: Option<String>,
    /// Host token of the subjects (default: the host name).
    #[serde(default)]
    pub host: Option<String>,
    /// JetStream stream holding `PREFIX.>` (default `REFLEX`); created
    /// when missing.
    #[serde(default)]
    pub stream: Option<String>,
    /// A NATS credentials file (JWT and nkey seed).
    #[serde(default)]
    pub creds: Option<PathBuf>,
    /// A server token.
    #[serde(default)]
    pub token: Option<String>,
    /// An nkey seed (`SU…`).
    #[serde(default)]
    pub nkey: Option<String>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Wait for a publish acknowledgement (default 5s).
    #[serde(default)]
    pub ack_timeout: Option<DurationValue>,
    /// De-duplication window of a stream the agent creates (default 2m).
    #[serde(default)]
    pub dedup_window: Option<DurationValue>,
    /// Wait for a connection (default 5s).
    #[serde(default)]
    pub connect_timeout: Option<DurationValue>,
    /// Also load policies from a key-value bucket (beside `--policies`).
    #[serde(default)]
    pub policies: Option<BusPolicies>,
}

/// `bus.policies`: where the fleet's policy set is kept.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusPolicies {
    /// Bucket of policy files (default `reflex-policies`).
    #[serde(default)]
    pub bucket: Option<String>,
    /// Only keys starting with this (default: all), e.g. `web.`.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// Bucket this host reports its revision in (default `reflex-status`).
    #[serde(default)]
    pub status_bucket: Option<String>,
}

/// `bus.tls`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificates (PEM) that sign the server's certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Client key (PEM), with `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Refuse a server that does not offer TLS (default true when `tls:`
    /// is given).
    #[serde(default)]
    pub required: Option<bool>,
}

/// Why the bus could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The credentials file could not be read.
    #[error("reading the credentials file {path}: {source}")]
    Creds {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No connection.
    #[error("connecting to {server}: {why}")]
    Connect {
        /// The server, redacted.
        server: String,
        /// What the client said.
        why: String,
    },
    /// The setting is not usable.
    #[error("bus: {0}")]
    Invalid(String),
}

impl fmt::Debug for BusConfig {
    /// Token, nkey seed and URL user info stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("BusConfig")
            .field("url", &self.shown())
            .field("subject_prefix", &self.subject_prefix)
            .field("host", &self.host)
            .field("stream", &self.stream)
            .field("creds", &self.creds)
            .field("token", &hidden(&self.token))
            .field("nkey", &hidden(&self.nkey))
            .field("tls", &self.tls)
            .field("ack_timeout", &self.ack_timeout)
            .field("dedup_window", &self.dedup_window)
            .field("connect_timeout", &self.connect_timeout)
            .field("policies", &self.policies)
            .finish()
    }
}

impl BusConfig {
    /// Whether the configuration itself holds a secret (a token, a seed,
    /// or user info in a URL), so the file must be private.
    pub fn holds_secrets(&self) -> bool {
        self.token.is_some()
            || self.nkey.is_some()
            || self.servers().iter().any(|s| {
                reqwest::Url::parse(s)
                    .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
            })
    }

    /// The server URLs; one written without a scheme is `nats://`.
    pub fn servers(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.contains("://") {
                    s.to_string()
                } else {
                    format!("nats://{s}")
                }
            })
            .collect()
    }

    /// The user and password a server URL carries, if any: the client
    /// does not take them from the URL by itself.
    fn url_user(&self) -> Option<(String, String)> {
        self.servers().iter().find_map(|s| {
            let url = reqwest::Url::parse(s).ok()?;
            (!url.username().is_empty()).then(|| {
                (
                    percent_decode(url.username()),
                    percent_decode(url.password().unwrap_or("")),
                )
            })
        })
    }

    /// The subject prefix in force.
    pub fn prefix(&self) -> String {
        token(self.subject_prefix.as_deref().unwrap_or(DEFAULT_PREFIX))
    }

    /// The stream name in force.
    pub fn stream_name(&self) -> String {
        self.stream.clone().unwrap_or_else(|| DEFAULT_STREAM.into())
    }

    /// Publish acknowledgement wait in force.
    pub fn ack_timeout(&self) -> Duration {
        self.ack_timeout.map_or(DEFAULT_ACK_TIMEOUT, |d| d.0)
    }

    /// De-duplication window in force.
    pub fn dedup_window(&self) -> Duration {
        self.dedup_window.map_or(DEFAULT_DEDUP_WINDOW, |d| d.0)
    }

    /// What is wrong with the settings, if anything.
    pub fn problem(&self) -> Option<String> {
        let stream = self.stream_name();
        if self.servers().is_empty() {
            Some("bus.url names no server".into())
        } else if stream.is_empty()
            || stream
                .chars()
                .any(|c| c.is_whitespace() || ".*>/\\".contains(c))
        {
            Some(format!(
                "bus.stream {stream:?} is not a stream name (no spaces, dots, *, >, slashes)"
            ))
        } else if self.ack_timeout().is_zero() || self.dedup_window().is_zero() {
            Some("bus.ack_timeout and bus.dedup_window must be above zero".into())
        } else if self
            .tls
            .as_ref()
            .is_some_and(|t| t.cert.is_some() != t.key.is_some())
        {
            Some("bus.tls.cert and bus.tls.key go together".into())
        } else {
            None
        }
    }

    /// Connects (once; the client then reconnects by itself), naming the
    /// connection `name` on the server.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, BusError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(
                self.connect_timeout
                    .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0),
            );
        if let Some(path) = &self.creds {
            options = options
                .credentials_file(path)
                .await
                .map_err(|source| BusError::Creds {
                    path: path.clone(),
                    source,
                })?;
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some((user, password)) = self.url_user() {
            options = options.user_and_password(user, password);
        }
        if let Some(seed) = &self.nkey {
            options = options.nkey(seed.clone());
        }
        if let Some(tls) = &self.tls {
            options = options.require_tls(tls.required.unwrap_or(true));
            if let Some(ca) = &tls.ca {
                options = options.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        options
            .connect(self.servers())
            .await
            .map_err(|e| BusError::Connect {
                server: self.shown(),
                why: self.scrub(&crate::logging::error_chain(&e)),
            })
    }

    /// The servers as logs show them.
    pub fn shown(&self) -> String {
        self.servers()
            .iter()
            .map(|s| shown(s))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `text` with every secret of this configuration replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        let mut secrets: Vec<String> = self.token.iter().chain(&self.nkey).cloned().collect();
        for server in self.servers() {
            if let Ok(u) = reqwest::Url::parse(&server) {
                secrets.extend(u.password().map(str::to_string));
                if !u.username().is_empty() {
                    secrets.push(u.username().to_string());
                }
            }
            text = text.replace(&server, &shown(&server));
        }
        for secret in secrets.iter().filter(|s| s.len() >= 3) {
            text = text.replace(secret.as_str(), "<redacted>");
        }
        text
    }
}

/// Opens key-value bucket `name`, creating it with `history` values per
/// key when it is missing. The stream is made here, as `KV_NAME` with the
/// settings a key-value bucket has, because the client's own creation
/// first reads account fields that servers before 2.10 (Debian's 2.9)
/// do not send.
pub async fn bucket(
    context: &async_nats::jetstream::Context,
    name: &str,
    history: i64,
) -> Result<async_nats::jetstream::kv::Store, String> {
    use async_nats::jetstream::stream;
    if let Ok(store) = context.get_key_value(name).await {
        return Ok(store);
    }
    context
        .get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: history,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating bucket {name}: {e}"))?;
    context
        .get_key_value(name)
        .await
        .map_err(|e| format!("opening bucket {name}: {e}"))
}

/// `scheme://host:port` of a server URL, never its user info.
pub fn shown(url: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        // `host:port` without a scheme has no user info to hide unless it
        // has an `@`.
        return match url.rsplit_once('@') {
            Some((_, host)) => format!("<redacted>@{host}"),
            None => url.to_string(),
        };
    };
    let mut text = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
    if let Some(port) = parsed.port() {
        text.push_str(&format!(":{port}"));
    }
    text
}

/// `text` as one subject token: dots, wildcards and spaces become `_`.
pub fn token(text: &str) -> String {
    let token: String = text
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if token.is_empty() { "_".into() } else { token }
}

/// This host's name, as the host token of subjects.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// `%XX` escapes of a URL's user info undone (a password may hold `@`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> BusConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn debug_and_errors_hide_secrets() {
        let c = config(
            "{ url: 'nats://alice:pa55word@10.0.0.1:4222,nats://10.0.0.2:4222', token: t0k3n, nkey: SUAAseed }",
        );
        let shown = format!("{c:?}");
        for secret in ["pa55word", "alice", "t0k3n", "SUAAseed"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("nats://10.0.0.1:4222,nats://10.0.0.2:4222"));
        assert!(c.holds_secrets());
        let scrubbed = c.scrub("failed nats://alice:pa55word@10.0.0.1:4222 with t0k3n");
        assert!(!scrubbed.contains("pa55word") && !scrubbed.contains("t0k3n"));
        assert!(!config("{ url: 'nats://127.0.0.1:4222' }").holds_secrets());
    }

    #[test]
    fn user_info_is_a_secret_and_sent_whatever_the_url_spelling() {
        let c = config("{ url: 'bob:S3cr%40t@127.0.0.1:4222' }");
        assert_eq!(c.servers(), ["nats://bob:S3cr%40t@127.0.0.1:4222"]);
        assert!(
            c.holds_secrets(),
            "a URL without a scheme still holds a password"
        );
        assert_eq!(c.url_user(), Some(("bob".into(), "S3cr@t".into())));
        assert!(!format!("{c:?}").contains("bob"));
        assert_eq!(config("{ url: '127.0.0.1:4222' }").url_user(), None);
    }

    #[test]
    fn tokens_never_split_a_subject() {
        assert_eq!(token("web-3.example.com"), "web-3_example_com");
        assert_eq!(token("a*b>c d"), "a_b_c_d");
        assert_eq!(token(""), "_");
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(config("{ url: '' }").problem().is_some());
        assert!(
            config("{ url: 'nats://h', stream: 'a.b' }")
                .problem()
                .is_some()
        );
        assert!(
            config("{ url: 'nats://h', tls: { cert: /c } }")
                .problem()
                .is_some()
        );
        assert!(config("{ url: 'nats://h' }").problem().is_none());
    }
}
