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
    sent: u32,
    suppressed: u64,
}

/// Budgets per (policy, key).
#[derive(Debug, Default)]
pub struct Throttler {
    windows: HashMap<(String, String), Window>,
}

/// Windows kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

impl Throttler {
    /// Counts one occurrence for `policy`/`key` at `now_ns`.
    pub fn check(&mut self, policy: &str, key: String, limit: &Throttle, now_ns: u64) -> Admission {
        let every = limit.every.as_nanos() as u64;
        if self.windows.len() >= SWEEP_AT {
            self.windows
                .retain(|_, w| now_ns.saturating_sub(w.start_ns) < every || w.suppressed > 0);
        }
        let window = self
            .windows
            .entry((policy.to_string(), key))
            .or_insert(Window {
                start_ns: now_ns,
                sent: 0,
                suppressed: 0,
            });
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
}
