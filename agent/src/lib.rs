//! reflex: an eBPF host sensor agent. Kernel probes capture events into ring
//! buffers; this crate loads them and runs the one-way pipeline
//! sensor (`sensor`) → settler (`settle`) → engine (`engine`) → actions
//! (`actions`) → sinks (`sinks`), with filesystem primitives in the leaf
//! module `fsio`.

pub mod actions;
pub mod blocks;
pub mod bus;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod events;
pub mod exec_kills;
pub mod fanotify;
pub mod fsio;
pub mod identity;
pub mod lanes;
pub mod limits;
pub mod loader;
pub mod logging;
pub mod policy;
pub mod process;
pub mod sensor;
pub mod settle;
pub mod sinks;
pub mod telemetry;
pub mod textdiff;
