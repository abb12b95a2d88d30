//! The CPU family: sample counters in maps that the agent reads each
//! interval; nothing crosses the ring buffer.

/// `CPU_HOST` slot: samples that found a task running.
pub const HOST_BUSY: u32 = 0;
/// `CPU_HOST` slot: every sample.
pub const HOST_ALL: u32 = 1;
/// Slots of `CPU_HOST`.
pub const HOST_SLOTS: u32 = 2;
