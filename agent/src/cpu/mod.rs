//! The CPU sensor's userspace half: per-interval percentages from the
//! kernel's sample counters (`sampler`) and threshold episodes (`monitor`).
pub mod monitor;
pub mod sampler;

pub use monitor::CpuMonitor;
pub use sampler::{CpuSample, CpuSampler};
