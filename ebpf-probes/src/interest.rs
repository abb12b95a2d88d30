//! The connect family's kernel filter: which connects some loaded policy
//! could match, filled by the agent from the compiled policy set on load
//! and on every reload. A connect no policy could match costs a counter
//! (`FILTERED`), not a ring-buffer record. Blocking never depends on it:
//! the hooks decide a refusal first and report every refused connect.

use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, lpm_trie::Key},
};
use reflex_wire::{
    BlockRule, maps,
    net::interest::{self, local},
};

/// The [`interest`] bits; zero (as loaded) sends everything.
#[map]
static CONNECT_FILTER: Array<u32> = Array::with_max_entries(1, 0);
exported_as!(CONNECT_FILTER, maps::CONNECT_FILTER);

/// IPv4 prefixes → ports and protocol classes some policy could match
/// outbound, built as `BLOCK4` is but from every connect policy.
#[map]
static INTEREST4: LpmTrie<u32, BlockRule> = LpmTrie::with_max_entries(4096, 1);
exported_as!(INTEREST4, maps::INTEREST4);

/// IPv6 prefixes, as [`INTEREST4`].
#[map]
static INTEREST6: LpmTrie<[u32; 4], BlockRule> = LpmTrie::with_max_entries(4096, 1);
exported_as!(INTEREST6, maps::INTEREST6);

/// Local ports wanted per direction ([`local`] entries), used under
/// [`interest::INBOUND_PORTS`] and [`interest::LISTEN_PORTS`].
#[map]
static LOCAL_PORTS: Array<BlockRule> = Array::with_max_entries(local::COUNT, 0);
exported_as!(LOCAL_PORTS, maps::LOCAL_PORTS);

#[inline(always)]
fn bits() -> u32 {
    CONNECT_FILTER.get(0).copied().unwrap_or(0)
}

/// Whether an outbound connect to IPv4 `ip` (as the kernel stores it),
/// `port` (host order) over `protocol` is wanted in user space.
#[inline(always)]
pub fn outbound4(ip: u32, port: u16, protocol: u32) -> bool {
    let bits = bits();
    if bits & interest::FILTERING == 0 {
        return true;
    }
    bits & interest::OUTBOUND != 0
        && INTEREST4
            .get(Key::new(32, ip))
            .is_some_and(|r| r.covers(port, protocol))
}

/// As [`outbound4`] for an IPv6 address (not IPv4-mapped).
#[inline(always)]
pub fn outbound6(ip: [u32; 4], port: u16, protocol: u32) -> bool {
    let bits = bits();
    if bits & interest::FILTERING == 0 {
        return true;
    }
    bits & interest::OUTBOUND != 0
        && INTEREST6
            .get(Key::new(128, ip))
            .is_some_and(|r| r.covers(port, protocol))
}

/// Whether an accepted (`inbound`) or listening socket on local `port`
/// (host order) over `protocol` is wanted in user space: its direction is
/// and, when the agent filters that direction by port, `LOCAL_PORTS`
/// covers the port.
#[inline(always)]
pub fn local(inbound: bool, port: u16, protocol: u32) -> bool {
    let bits = bits();
    if bits & interest::FILTERING == 0 {
        return true;
    }
    let (direction, by_port, entry) = match inbound {
        true => (interest::INBOUND, interest::INBOUND_PORTS, local::INBOUND),
        false => (interest::LISTEN, interest::LISTEN_PORTS, local::LISTEN),
    };
    bits & direction != 0
        && (bits & by_port == 0
            || LOCAL_PORTS
                .get(entry)
                .is_some_and(|r| r.covers(port, protocol)))
}
