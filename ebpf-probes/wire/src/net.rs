//! The connect family: outbound connects and unconnected datagrams (seen
//! and possibly refused by the cgroup connect and sendmsg hooks), accepted
//! connections and listening sockets.

use crate::EventHeader;

/// `NetEvent.direction` values.
pub mod direction {
    /// This host connects out.
    pub const OUTBOUND: u32 = 1;
    /// A peer's connection was accepted.
    pub const INBOUND: u32 = 2;
    /// A socket started listening.
    pub const LISTEN: u32 = 3;
}

/// Bits of the `CONNECT_FILTER` word: which connects leave the kernel.
/// Zero (the word as loaded) sends every one, for `reflex events`; the
/// agent's `run` sets [`interest::FILTERING`] and the directions some
/// loaded policy could match. The others are counted in `FILTERED`.
pub mod interest {
    /// Filter at all; without it every connect is sent.
    pub const FILTERING: u32 = 1;
    /// Outbound connects and datagrams whose destination is in
    /// `INTEREST4`/`INTEREST6` (port and protocol class included) are sent.
    pub const OUTBOUND: u32 = 2;
    /// Accepted connections are sent.
    pub const INBOUND: u32 = 4;
    /// Sockets that start listening are sent.
    pub const LISTEN: u32 = 8;
    /// With [`INBOUND`]: only accepted connections whose local port and
    /// protocol class `LOCAL_PORTS[local::INBOUND]` covers are sent.
    pub const INBOUND_PORTS: u32 = 16;
    /// With [`LISTEN`]: only sockets whose local port and protocol class
    /// `LOCAL_PORTS[local::LISTEN]` covers are sent.
    pub const LISTEN_PORTS: u32 = 32;

    /// Entries of `LOCAL_PORTS`, a [`crate::BlockRule`] of local ports each.
    pub mod local {
        /// Accepted connections.
        pub const INBOUND: u32 = 0;
        /// Listening sockets.
        pub const LISTEN: u32 = 1;
        /// Entries.
        pub const COUNT: u32 = 2;
    }
}

/// Protocol numbers (IANA).
pub mod proto {
    /// TCP.
    pub const TCP: u32 = 6;
    /// UDP.
    pub const UDP: u32 = 17;
    /// UDP-Lite: sent through the UDP code and its hooks; UDP for policies.
    pub const UDPLITE: u32 = 136;
    /// Multipath TCP: falls back to plain TCP with any peer; TCP for policies.
    pub const MPTCP: u32 = 262;
}

/// Address families.
pub mod addr_family {
    /// IPv4.
    pub const INET: u32 = 2;
    /// IPv6.
    pub const INET6: u32 = 10;
}

/// The first three 32-bit words (as stored, network byte order) of an
/// IPv4-mapped IPv6 address, `::ffff:0:0/96`; the fourth is the IPv4 address.
pub const V4_MAPPED_PREFIX: [u32; 3] = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff])];

/// Protocol classes of a [`BlockRule`], the index into its `ranges`.
pub mod class {
    /// TCP (and MPTCP).
    pub const TCP: usize = 0;
    /// UDP (and UDP-Lite).
    pub const UDP: usize = 1;
    /// Any other protocol (refused only by policies naming no protocol).
    pub const OTHER: usize = 2;
    /// Number of classes.
    pub const COUNT: usize = 3;

    /// The class of protocol number `protocol`.
    #[inline(always)]
    pub const fn of(protocol: u32) -> usize {
        match protocol {
            super::proto::TCP | super::proto::MPTCP => TCP,
            super::proto::UDP | super::proto::UDPLITE => UDP,
            _ => OTHER,
        }
    }
}

/// Most port ranges a [`BlockRule`] holds per protocol class. The agent
/// merges overlapping and adjacent ranges of every policy first; past this
/// it joins the closest ranges (refusing the ports between them) and counts
/// it in `reflex_block_rule_errors_total{reason="too_many_ports"}`.
pub const MAX_RANGES: usize = 16;

/// Value of the `BLOCK4` / `BLOCK6` LPM tries: what the longest-prefix
/// match refuses. The agent stores an entry at every prefix any enforcing
/// `block` policy names in `remote` or `except`, holding the ports of
/// exactly those policies that cover that prefix and do not except it; as
/// the prefixes holding an address form a chain, the longest match holds
/// the policies that cover the address. An entry with no ranges lets
/// everything through.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockRule {
    /// Ranges in use per protocol [`class`]; 0: that class is not refused.
    pub counts: [u32; class::COUNT],
    /// Explicit padding.
    pub _pad: u32,
    /// Inclusive (first, last) remote port ranges per protocol [`class`],
    /// host byte order, sorted and disjoint.
    pub ranges: [[[u16; 2]; MAX_RANGES]; class::COUNT],
}

const _: () = assert!(core::mem::size_of::<BlockRule>() == 16 + 3 * MAX_RANGES * 4);

impl BlockRule {
    /// Whether this entry refuses `port` (host byte order) over `protocol`.
    #[inline(always)]
    pub fn refuses(&self, port: u16, protocol: u32) -> bool {
        self.covers(port, protocol)
    }

    /// Whether `port` (host byte order) over `protocol` is in this entry's
    /// ranges: refused in `BLOCK4`/`BLOCK6`, wanted in `INTEREST4`/`INTEREST6`.
    #[inline(always)]
    pub fn covers(&self, port: u16, protocol: u32) -> bool {
        let class = class::of(protocol);
        let count = self.counts[class];
        let ranges = &self.ranges[class];
        let mut i = 0;
        while i < MAX_RANGES {
            if (i as u32) < count {
                let [first, last] = ranges[i];
                if port >= first && port <= last {
                    return true;
                }
            }
            i += 1;
        }
        false
    }
}

/// A connection seen by the probes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetEvent {
    /// Common header; `kind` is `EventKind::Connect`.
    pub header: EventHeader,
    /// A [`direction`] value.
    pub direction: u32,
    /// A [`proto`] value.
    pub protocol: u32,
    /// An [`addr_family`] value.
    pub addr_family: u32,
    /// 1 when the connect hook refused it.
    pub blocked: u32,
    /// Local port, host byte order (0 when not yet bound).
    pub local_port: u16,
    /// Remote port, host byte order.
    pub remote_port: u16,
    /// 1 when a `sendmsg` hook saw it: a datagram sent without `connect`.
    pub datagram: u32,
    /// Datagrams of the same flow (process, remote address, port,
    /// protocol) seen but not reported since the previous report of it (a
    /// lower bound when threads on several CPUs send the flow at once).
    pub suppressed: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Local address (IPv4 in the first four bytes).
    pub local_addr: [u8; 16],
    /// Remote address (IPv4 in the first four bytes; an IPv4-mapped IPv6
    /// address is sent as it is and the agent's decoder turns it into IPv4).
    pub remote_addr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<NetEvent>() == 64 + 16 + 16 + 32);
