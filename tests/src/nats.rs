//! A real `nats-server` with JetStream on a loopback port and a temporary
//! store, stopped and removed on drop (also when the test fails), and a
//! reader of what a stream holds.
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;

use crate::{ChildGuard, eventually, free_port};

/// A `nats-server -js` child; stopping and starting it again keeps its
/// port and its store, as a restarted server would.
pub struct NatsServer {
    child: Option<ChildGuard>,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free loopback port and waits (bounded) until
    /// it takes connections.
    pub fn start() -> Self {
        let store = tempfile::Builder::new()
            .prefix("reflex-nats-test")
            .tempdir()
            .expect("a store directory");
        let mut server = Self {
            child: None,
            port: free_port(),
            store,
        };
        server.resume();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The store directory.
    pub fn store(&self) -> PathBuf {
        self.store.path().to_owned()
    }

    /// Stops the server (SIGTERM, then waits for it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.signal(Signal::SIGTERM);
            child
                .wait_for(Duration::from_secs(30))
                .expect("nats-server stops on SIGTERM");
        }
    }

    /// Starts the server again on its port with its store.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the server already runs");
        let child = ChildGuard::spawn(
            Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
                .arg("-sd")
                .arg(self.store.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("address");
        assert!(
            eventually(Duration::from_secs(30), || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }),
            "nats-server (installed by cargo xtask setup) never listened on {addr}"
        );
        self.child = Some(child);
    }
}

/// One message a stream holds.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its subject.
    pub subject: String,
    /// Its `Nats-Msg-Id` header, if any.
    pub msg_id: Option<String>,
    /// Its payload as JSON.
    pub body: serde_json::Value,
}

/// Every message of `stream` on the server at `url`, oldest first; empty
/// when the stream does not exist.
pub fn stream_messages(url: &str, stream: &str) -> Vec<Stored> {
    block_on(async {
        let client = async_nats::connect(url).await.expect("connecting to NATS");
        let context = async_nats::jetstream::new(client);
        let Ok(mut handle) = context.get_stream(stream).await else {
            return Vec::new();
        };
        let state = handle.info().await.expect("stream info").state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            let Ok(message) = handle.get_raw_message(seq).await else {
                continue;
            };
            out.push(Stored {
                subject: message.subject.to_string(),
                msg_id: message
                    .headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_string()),
                body: serde_json::from_slice(&message.payload).unwrap_or_default(),
            });
        }
        out
    })
}

/// The value of `key` in key-value bucket `bucket`, if there is one.
pub fn kv_get(url: &str, bucket: &str, key: &str) -> Option<String> {
    block_on(async {
        let client = async_nats::connect(url).await.expect("connecting to NATS");
        let store = async_nats::jetstream::new(client)
            .get_key_value(bucket)
            .await
            .ok()?;
        let value = store.get(key).await.ok()??;
        Some(String::from_utf8_lossy(&value).into_owned())
    })
}

/// Runs `future` to its end on a runtime of its own (the tests are not async).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}
