//! reflex: an eBPF host sensor agent. Kernel probes capture events into a
//! ring buffer; this crate loads them, decodes and enriches the events with
//! process context, and hands them to whoever consumes the stream.

pub mod actions;
pub mod cli;
pub mod commands;
pub mod config;
pub mod cpu;
pub mod engine;
pub mod events;
pub mod files;
pub mod loader;
pub mod logging;
pub mod net;
pub mod policy;
pub mod process;
pub mod sensor;
pub mod sinks;
pub mod telemetry;
