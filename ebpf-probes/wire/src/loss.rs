//! Why the kernel side could not deliver an event; indexes the `LOST` per-CPU map.

/// Index into the probes' per-CPU `LOST` counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// `bpf_ringbuf_reserve` failed: the agent is not reading fast enough.
    RingbufFull = 0,
    /// A kernel read the probe needed failed, so the event was not sent.
    ReadFailed = 1,
}

impl LossReason {
    /// Every reason, in index order.
    pub const ALL: [LossReason; 2] = [LossReason::RingbufFull, LossReason::ReadFailed];
    /// Number of slots the `LOST` map needs.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Label used for this reason in logs and metrics.
    pub const fn label(self) -> &'static str {
        match self {
            LossReason::RingbufFull => "ringbuf_full",
            LossReason::ReadFailed => "kernel_read_failed",
        }
    }
}
