//! Records that cross the kernel boundary: one fixed [`EventHeader`] then a
//! per-family payload, plus the settings the agent writes into the probes.
//!
//! Every type is `#[repr(C)]`, built from fixed-width integers and byte arrays
//! with explicit padding, and its size is asserted at compile time so the two
//! sides cannot drift apart.
#![no_std]

pub mod file;
pub mod header;
pub mod kind;
pub mod loss;
pub mod net;
pub mod offsets;
pub mod process;
pub mod syscalls;

pub use file::{FileEvent, FileKey};
pub use header::EventHeader;
pub use kind::EventKind;
pub use loss::{LOSS_SLOTS, LossFamily, LossReason, loss_slot};
pub use net::{BlockRule, NetEvent};
pub use offsets::KernelOffsets;
pub use process::{ExecEvent, ExitEvent, ForkEvent};

/// Length of a task's `comm`, as the kernel defines `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// Implements `aya::Pod` for records the agent reads from or writes to maps.
#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers and byte
    // arrays with explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for crate::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::FileKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::BlockRule {}
}
