//! File descriptors: the agent raises its soft `RLIMIT_NOFILE` to the hard
//! limit at start, and sizes what outsiders can make it open (connections
//! to `/metrics`) so that a reserve stays free for what enforcement needs:
//! reverts, kills (pidfds), hooks (three pipes and a pidfd each) and spools.
use std::path::Path;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors one running hook holds in the agent.
const PER_HOOK: usize = 4;

/// The descriptor limit before and after [`raise`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Soft and hard limit the agent started with (hooks get these back).
    pub inherited: (u64, u64),
    /// Soft limit in force.
    pub soft: u64,
}

/// Raises the soft limit to the hard one; a failure is logged and the
/// inherited limit kept.
pub fn raise() -> Limits {
    let now = getrlimit(Resource::Nofile);
    let (soft, hard) = (
        now.current.unwrap_or(u64::MAX),
        now.maximum.unwrap_or(u64::MAX),
    );
    let mut limits = Limits {
        inherited: (soft, hard),
        soft,
    };
    if soft < hard {
        let raised = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limits.soft = hard,
            Err(err) => tracing::warn!(%err, soft, hard, "raising the descriptor limit"),
        }
    }
    limits
}

/// Descriptors open in this process now.
pub fn open_now() -> usize {
    std::fs::read_dir(Path::new("/proc/self/fd")).map_or(0, |d| d.count())
}

/// The `/metrics` connection cap that leaves `reserve` descriptors (plus
/// those of `max_hooks` hooks) free under `limit` with `in_use` open: the
/// configured `wanted`, or less (at least one) when the limit is too low.
pub fn connection_cap(
    limit: u64,
    in_use: usize,
    reserve: usize,
    max_hooks: usize,
    wanted: usize,
) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let free = limit
        .saturating_sub(in_use)
        .saturating_sub(reserve)
        .saturating_sub(max_hooks * PER_HOOK);
    wanted.min(free).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_the_reserve_free() {
        assert_eq!(connection_cap(65536, 200, 256, 16, 64), 64);
        // 1024 - 900 - 64 - 16·4 = 0 left: one connection still.
        assert_eq!(connection_cap(1024, 900, 64, 16, 64), 1);
        assert_eq!(connection_cap(1024, 600, 256, 16, 64), 64);
        assert_eq!(connection_cap(1024, 700, 256, 0, 64), 64);
        assert_eq!(connection_cap(1024, 720, 256, 0, 64), 48);
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let limits = raise();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, now.maximum);
        assert_eq!(Some(limits.soft), now.current);
    }
}
