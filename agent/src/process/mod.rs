//! The process table: pid → what the agent knows of the process, seeded from
//! `/proc` at start-up and kept current by exec and exit events.
pub mod procfs;
pub mod table;

pub use table::{ProcessInfo, ProcessTable};
