//! Metrics: one registry the agent fills and a Prometheus endpoint serves.
pub mod metrics;

pub use metrics::Metrics;
