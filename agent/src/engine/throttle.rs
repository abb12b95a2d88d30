//! `throttle:` budgets for alerts and hooks, counted on event time so a
//! replay decides exactly as the live run did.
use std::collections::HashMap;

use crate::policy::model::Throttle;

/// Whether an alert/hook may go out, and how many were held back before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// May go out.
    pub allowed: bool,
    /// Suppressed since the last one that went out (reported with it).
    pub suppressed: u64,
}

#[derive(Debug)]
struct Window {
    start_ns: u64,
    every_ns: u64,
    sent: u32,
    suppressed: u64,
}

/// Budgets per (policy, key).
#[derive(Debug, Default)]
pub struct Throttler {
    windows: HashMap<(String, String), Window>,
    /// Windows held after the last sweep, and its event time.
    swept_len: usize,
    swept_ns: u64,
    /// Occurrences whose key found no room and shared the overflow window.
    overflowed: u64,
}

/// Windows held before the first sweep; later sweeps wait until the map
/// has doubled, so sweeping costs an amortised constant per occurrence
/// however many keys an attacker invents.
const SWEEP_AT: usize = 4_096;

/// Windows held at most. Past it a key seen for the first time shares its
/// policy's one overflow window: many keys (remote addresses, processes)
/// are throttled harder, never given memory.
pub const MAX_WINDOWS: usize = 65_536;

/// At the cap, swept at most this often (event time): the map cannot
/// double any more, and windows expire.
const FULL_SWEEP_NS: u64 = 1_000_000_000;

/// The key of a policy's overflow window (no real key holds a NUL).
const OVERFLOW_KEY: &str = "\0overflow";

impl Throttler {
    /// Windows held now.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no window is held.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Occurrences so far that shared an overflow window.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Counts one occurrence for `policy`/`key` at `now_ns`.
    pub fn check(&mut self, policy: &str, key: String, limit: &Throttle, now_ns: u64) -> Admission {
        let every = limit.every.as_nanos() as u64;
        let len = self.windows.len();
        let full = len >= MAX_WINDOWS && now_ns.saturating_sub(self.swept_ns) >= FULL_SWEEP_NS;
        if full || len >= SWEEP_AT.max(self.swept_len.saturating_mul(2)) {
            // A window past its time holds nothing a later occurrence
            // needs but the count it held back; that count is dropped.
            self.windows
                .retain(|_, w| now_ns.saturating_sub(w.start_ns) < w.every_ns);
            self.swept_len = self.windows.len();
            self.swept_ns = now_ns;
        }
        let mut id = (policy.to_string(), key);
        if self.windows.len() >= MAX_WINDOWS && !self.windows.contains_key(&id) {
            id.1 = OVERFLOW_KEY.to_string();
            self.overflowed += 1;
        }
        let window = self.windows.entry(id).or_insert(Window {
            start_ns: now_ns,
            every_ns: every,
            sent: 0,
            suppressed: 0,
        });
        window.every_ns = every;
        if now_ns.saturating_sub(window.start_ns) >= every {
            window.start_ns = now_ns;
            window.sent = 0;
        }
        if window.sent < limit.max {
            window.sent += 1;
            let suppressed = std::mem::take(&mut window.suppressed);
            Admission {
                allowed: true,
                suppressed,
            }
        } else {
            window.suppressed += 1;
            Admission {
                allowed: false,
                suppressed: window.suppressed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::spec::ThrottleKey;

    #[test]
    fn holds_back_within_a_window_and_reports_the_count_after() {
        let limit = Throttle {
            per: ThrottleKey::Process,
            max: 1,
            every: Duration::from_secs(60),
        };
        let mut t = Throttler::default();
        let s = 1_000_000_000;
        assert!(t.check("p", "1".into(), &limit, 0).allowed);
        assert!(!t.check("p", "1".into(), &limit, s).allowed);
        assert!(!t.check("p", "1".into(), &limit, 2 * s).allowed);
        assert!(t.check("p", "2".into(), &limit, 2 * s).allowed, "other key");
        let after = t.check("p", "1".into(), &limit, 61 * s);
        assert_eq!(
            after,
            Admission {
                allowed: true,
                suppressed: 2
            }
        );
    }

    #[test]
    fn windows_are_swept_and_capped_whatever_the_keys() {
        let limit = Throttle {
            per: ThrottleKey::Process,
            max: 1,
            every: Duration::from_secs(2),
        };
        let s = 1_000_000_000;
        let mut t = Throttler::default();
        // Each key twice, so every window holds a suppressed count.
        for i in 0..2 * MAX_WINDOWS as u64 {
            for _ in 0..2 {
                t.check("p", i.to_string(), &limit, i * 1000);
            }
        }
        assert!(t.len() <= MAX_WINDOWS + 1, "{} windows", t.len());
        assert!(t.overflowed() > 0, "new keys shared the overflow window");
        let end = 2 * MAX_WINDOWS as u64 * 1000;
        assert!(
            !t.check("p", "fresh".into(), &limit, end + 1).allowed,
            "a new key with no room shares the spent overflow budget"
        );
        // Once the windows' time has passed a sweep makes room again.
        let overflowed = t.overflowed();
        assert!(t.check("q", "new".into(), &limit, 100 * s).allowed);
        assert!(t.check("q", "other".into(), &limit, 100 * s).allowed);
        assert_eq!(t.overflowed(), overflowed, "room again, no overflow");
        assert!(t.len() < 10, "{} windows after the sweep", t.len());
    }
}
