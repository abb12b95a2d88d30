//! Why the kernel side could not deliver an event, and of which family;
//! together they index the `LOST` per-CPU map.

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

/// The event family a lost (or filtered) event belonged to; each family
/// has its own ring buffer.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossFamily {
    /// The exec family: exec, exit, fork.
    Exec = 0,
    /// File changes.
    File = 1,
    /// Connects, accepts, listens.
    Connect = 2,
}

impl LossFamily {
    /// Every family, in index order.
    pub const ALL: [LossFamily; 3] = [LossFamily::Exec, LossFamily::File, LossFamily::Connect];
    /// Number of families.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Label used for this family in metrics (as in `reflex_events_total`).
    pub const fn label(self) -> &'static str {
        match self {
            LossFamily::Exec => "exec",
            LossFamily::File => "file",
            LossFamily::Connect => "connect",
        }
    }
}

/// Slots of the `LOST` map: one per (reason, family).
pub const LOSS_SLOTS: u32 = LossReason::COUNT * LossFamily::COUNT;

/// The `LOST` slot of `reason` for `family`.
pub const fn loss_slot(reason: LossReason, family: LossFamily) -> u32 {
    reason as u32 * LossFamily::COUNT + family as u32
}
