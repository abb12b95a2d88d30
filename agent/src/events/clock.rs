//! Kernel `CLOCK_BOOTTIME` stamps to wall-clock time.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::time::{ClockId, clock_gettime};

/// Converts boot-time nanoseconds to wall-clock time, with the offset
/// between the two clocks taken once at start-up.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    boot_epoch_ns: i128,
}

impl BootClock {
    /// Measures the offset between `CLOCK_REALTIME` and `CLOCK_BOOTTIME` now.
    pub fn new() -> Self {
        let ns = |id| {
            clock_gettime(id)
                .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
                .unwrap_or(0)
        };
        let boot = ns(ClockId::CLOCK_BOOTTIME);
        let real = ns(ClockId::CLOCK_REALTIME);
        Self {
            boot_epoch_ns: real - boot,
        }
    }

    /// Boot-time nanoseconds now.
    pub fn now_ns() -> u64 {
        clock_gettime(ClockId::CLOCK_BOOTTIME)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(0)
    }

    /// Wall-clock time of a boot-time stamp.
    pub fn to_system_time(&self, ktime_ns: u64) -> SystemTime {
        let ns = (self.boot_epoch_ns + ktime_ns as i128).max(0) as u128;
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}
