//! Records that cross the kernel boundary: one fixed [`EventHeader`] then a
//! per-family payload, plus the settings the agent writes into the probes.
//!
//! Every type is `#[repr(C)]`, built from fixed-width integers and byte arrays
//! with explicit padding, and its size is asserted at compile time so the two
//! sides cannot drift apart.
//!
//! Everything else both sides must agree on is defined here once: the names
//! of the object's maps and programs ([`maps`], [`programs`]), the syscalls
//! the probes handle ([`syscalls`]), `open` flags ([`file::open`]) and the
//! CPU counters' slots ([`cpu`]).
#![no_std]

pub mod cpu;
pub mod file;
pub mod header;
pub mod kind;
pub mod loss;
pub mod maps;
pub mod net;
pub mod offsets;
pub mod process;
pub mod programs;
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

/// Whether `a` and `b` are the same name (`==` on `str` is not `const`
/// yet): the probes' compile-time check that a map or program is exported
/// under its [`maps`] or [`programs`] name.
pub const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

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
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::process::ExecName {}
}
