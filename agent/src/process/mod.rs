//! The process table: pid → what the agent knows of the process, seeded from
//! `/proc` at start-up and kept current by fork, exec and exit events, with
//! each process's lineage (`lineage`).
pub mod lineage;
pub mod procfs;
pub mod table;

pub use lineage::{DEFAULT_ANCESTRY_DEPTH, Lineages};
pub use table::{Login, ProcessInfo, ProcessTable};
