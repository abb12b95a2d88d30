//! What the root integration tests (`tests/`) and the benchmarks
//! (`cargo xtask bench`) share: starting a `reflex` process and waiting
//! until it says it is ready, a guard that ends only the child it started,
//! and reading the agent's Prometheus `/metrics`.
//!
//! Nothing here needs root; the callers do.
mod agent;
mod child;
mod http;
mod metrics;

pub use agent::{Agent, Launch, run_args};
pub use child::ChildGuard;
pub use http::{http_get, scrape};
pub use metrics::{Metrics, ParseError, Sample};

use std::{net::SocketAddr, process::ExitStatus, time::Duration};

/// Why starting, signalling or reading an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command could not be spawned.
    #[error("starting {command}: {source}")]
    Spawn {
        /// The command line, as `Command`'s `Debug` shows it.
        command: String,
        /// What the spawn returned.
        source: std::io::Error,
    },
    /// The process did not log its readiness line in time (or exited).
    #[error("{command} did not log {ready:?} within {limit:?} (exit status: {status:?})")]
    NotReady {
        /// The command line.
        command: String,
        /// The text the readiness line contains.
        ready: String,
        /// How long it was given.
        limit: Duration,
        /// Its exit status if it had exited.
        status: Option<ExitStatus>,
    },
    /// The child was already reaped; its pid may belong to another process.
    #[error("child {0} has already been reaped")]
    Reaped(u32),
    /// Sending a signal to the child failed.
    #[error("signalling child {pid}: {source}")]
    Signal {
        /// The child's pid.
        pid: u32,
        /// What kill(2) returned.
        source: nix::errno::Errno,
    },
    /// Waiting for the child failed.
    #[error("waiting for child {pid}: {source}")]
    Wait {
        /// The child's pid.
        pid: u32,
        /// What waitpid(2) returned.
        source: std::io::Error,
    },
    /// The child did not exit in time after being asked to.
    #[error("child {pid} did not exit within {limit:?}")]
    StillRunning {
        /// The child's pid.
        pid: u32,
        /// How long it was given.
        limit: Duration,
    },
    /// The agent never logged where it serves `/metrics`.
    #[error("no metrics address in the agent's log")]
    NoMetricsAddr,
    /// An HTTP address outside loopback was given.
    #[error("{0} is not a loopback address")]
    NotLoopback(SocketAddr),
    /// The HTTP exchange failed.
    #[error("GET {path} from {addr}: {source}")]
    Http {
        /// The server.
        addr: SocketAddr,
        /// The requested path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `/metrics` text did not parse.
    #[error("/metrics: {0}")]
    Metrics(#[from] ParseError),
}
