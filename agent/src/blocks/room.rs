//! How many prefixes the connect filter's tries (`INTEREST4`,
//! `INTEREST6`) and the block tries (`BLOCK4`, `BLOCK6`) are made with:
//! twice what the policy set names when the agent starts, plus room for
//! reloads to grow into, at most `connect_filter.max_prefixes`. A kernel
//! map cannot grow once made: a set that needs more filter room than made
//! (a reload, or a start past the setting) is not filtered at all, every
//! connect is sent, until a set that fits is loaded (logged;
//! `reflex_kernel_filter_active` is 0); a block rule that finds no room is
//! logged and counted.
use serde::Deserialize;

use crate::policy::PolicySet;

/// Default ceiling of each trie.
pub const DEFAULT_MAX_PREFIXES: u32 = 65_536;

/// Prefixes a reload may add after start before the tries are full.
pub const HEADROOM: u32 = 4_096;

/// `connect_filter:` in `reflex.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectFilterConfig {
    /// Most prefixes each trie holds (default 65 536).
    pub max_prefixes: Option<u32>,
}

impl ConnectFilterConfig {
    /// The ceiling, default filled in.
    pub fn max_prefixes(&self) -> u32 {
        self.max_prefixes.unwrap_or(DEFAULT_MAX_PREFIXES).max(1)
    }
}

/// The room to make in each trie for `set`, within `max`.
pub fn room(set: &PolicySet, max: u32) -> u32 {
    let (v4, v6) = super::interest::of(set).outbound.counts();
    room_for(v4.max(v6), max)
}

/// The room to make in each block trie (`BLOCK4`, `BLOCK6`) for `set`,
/// within `max`: the same rule as the filter's. A rule that finds no room
/// after a reload is logged and counted in
/// `reflex_block_rule_errors_total{reason="install_failed"}`.
pub fn block_room(set: &PolicySet, max: u32) -> u32 {
    let (v4, v6) = super::rules(set).counts();
    room_for(v4.max(v6), max)
}

/// The room for `found` prefixes of one address family.
pub fn room_for(found: usize, max: u32) -> u32 {
    u32::try_from(found)
        .unwrap_or(u32::MAX)
        .saturating_mul(2)
        .saturating_add(HEADROOM)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twice_the_set_plus_headroom_within_the_ceiling() {
        assert_eq!(room_for(0, DEFAULT_MAX_PREFIXES), HEADROOM);
        assert_eq!(room_for(10_000, DEFAULT_MAX_PREFIXES), 24_096);
        assert_eq!(room_for(40_000, DEFAULT_MAX_PREFIXES), DEFAULT_MAX_PREFIXES);
        assert_eq!(room_for(usize::MAX, 8), 8);
        let config: ConnectFilterConfig = serde_yaml::from_str("max_prefixes: 0").unwrap();
        assert_eq!(config.max_prefixes(), 1);
    }
}
