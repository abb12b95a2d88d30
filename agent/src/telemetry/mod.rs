//! Metrics: one registry the agent fills and a Prometheus endpoint serves;
//! component health; stage liveness; sd_notify.
pub mod alive;
pub mod health;
pub mod kernel;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod server;
pub mod watch;

pub use metrics::{Metrics, UNKNOWN_FAMILY};
