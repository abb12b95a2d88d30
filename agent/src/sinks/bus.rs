//! The bus sink: each alert published on JetStream as
//! `PREFIX.HOST.FAMILY.KIND` with a `Nats-Msg-Id` drawn from its content,
//! so a retry after a lost acknowledgement is dropped by the stream's
//! de-duplication window instead of stored twice. Delivery waits for the
//! acknowledgement; the spool in front keeps alerts while the server is
//! away.
use async_nats::{HeaderMap, jetstream};
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use crate::bus::{BusConfig, host_name, token};

/// A connection to the bus and what publishing needs.
pub struct Publisher {
    config: BusConfig,
    prefix: String,
    host: String,
    /// Opened at the first delivery, dropped after a failure so the next
    /// one connects again and makes sure the stream exists.
    context: Mutex<Option<jetstream::Context>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("config", &self.config)
            .field("host", &self.host)
            .finish()
    }
}

impl Publisher {
    /// A publisher for `config`; connects at the first delivery.
    pub fn new(config: BusConfig) -> Self {
        let prefix = config.prefix();
        let host = token(&config.host.clone().unwrap_or_else(host_name));
        Self {
            config,
            prefix,
            host,
            context: Mutex::new(None),
        }
    }

    /// Publishes one alert and waits for the stream's acknowledgement.
    pub async fn send(&self, body: &[u8]) -> Result<(), String> {
        let mut held = self.context.lock().await;
        let context = match held.as_ref() {
            Some(context) => context.clone(),
            None => {
                let context = self.open().await?;
                *held = Some(context.clone());
                context
            }
        };
        let sent = self.publish(&context, body).await;
        if sent.is_err() {
            *held = None;
        }
        sent
    }

    async fn publish(&self, context: &jetstream::Context, body: &[u8]) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message_id(&self.host, body).as_str());
        let subject = subject(&self.prefix, &self.host, body);
        let timeout = self.config.ack_timeout();
        let acked = tokio::time::timeout(timeout, async {
            context
                .publish_with_headers(subject.clone(), headers, body.to_vec().into())
                .await
                .map_err(|e| crate::logging::error_chain(&e))?
                .await
                .map_err(|e| crate::logging::error_chain(&e))
        })
        .await;
        match acked {
            Ok(Ok(_ack)) => Ok(()),
            Ok(Err(why)) => Err(format!(
                "publishing on {subject} to {}: {}",
                self.config.shown(),
                self.config.scrub(&why)
            )),
            Err(_) => Err(format!(
                "no acknowledgement for {subject} from {} within {timeout:?}",
                self.config.shown()
            )),
        }
    }

    /// Connects and makes sure a stream holds `PREFIX.>`.
    async fn open(&self) -> Result<jetstream::Context, String> {
        let client = self
            .config
            .connect(&format!("reflex {}", self.host))
            .await
            .map_err(|e| e.to_string())?;
        let context = jetstream::new(client);
        let name = self.config.stream_name();
        let subjects = format!("{}.>", self.prefix);
        let wanted = jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subjects.clone()],
            duplicate_window: self.config.dedup_window(),
            ..Default::default()
        };
        context
            .get_or_create_stream(wanted)
            .await
            .map_err(|e| {
                format!(
                    "cannot find or create the JetStream stream {name} for {subjects} on {} ({}); is JetStream enabled on the server, and may this user create streams? An operator may create it instead",
                    self.config.shown(),
                    self.config.scrub(&crate::logging::error_chain(&e)),
                )
            })?;
        Ok(context)
    }
}

/// `PREFIX.HOST.FAMILY.KIND` of an alert: the event's family and kind
/// (for file events the change, such as `write`), `_` when unreadable.
pub fn subject(prefix: &str, host: &str, body: &[u8]) -> String {
    let alert: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let event = &alert["event"];
    let kind: Option<crate::events::Kind> = serde_json::from_value(event["kind"].clone()).ok();
    let family = kind.map_or("_", |k| k.family());
    let detail = match kind {
        Some(crate::events::Kind::File) => event["file"]["change"]
            .as_str()
            .unwrap_or("file")
            .to_string(),
        Some(k) => k.as_str().to_string(),
        None => "_".into(),
    };
    format!("{prefix}.{host}.{family}.{}", token(&detail))
}

/// A stable id of one alert: the host and a digest of its JSON, the same
/// for every retry and across restarts.
pub fn message_id(host: &str, body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_host_family_and_kind() {
        let file = br#"{"event":{"kind":"file","file":{"change":"write"}}}"#;
        assert_eq!(subject("reflex", "web-3", file), "reflex.web-3.file.write");
        let exit = br#"{"event":{"kind":"exit"}}"#;
        assert_eq!(subject("p", "h", exit), "p.h.exec.exit");
        let cpu = br#"{"event":{"kind":"cpu_high"}}"#;
        assert_eq!(subject("p", "h", cpu), "p.h.cpu.cpu_high");
        assert_eq!(subject("p", "h", b"not json"), "p.h._._");
    }

    #[test]
    fn message_ids_follow_the_content() {
        assert_eq!(message_id("h", b"a"), message_id("h", b"a"));
        assert_ne!(message_id("h", b"a"), message_id("h", b"b"));
        assert_ne!(message_id("h", b"a"), message_id("g", b"a"));
    }
}
