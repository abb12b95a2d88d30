//! Metrics: one registry the agent fills and a Prometheus endpoint serves.
pub mod metrics;
pub mod notify;
pub mod server;

pub use metrics::{Metrics, UNKNOWN_FAMILY};
