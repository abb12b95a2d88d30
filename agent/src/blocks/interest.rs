//! The connect family's kernel filter as the agent drives it: which
//! connects some loaded policy could match, so that only those leave the
//! kernel (the rest are counted in `reflex_kernel_filtered_total`).
//!
//! Outbound connects are filtered exactly as the policies' conditions on
//! the connect itself say (address family, prefix and `except`, port,
//! protocol): the `INTEREST4`/`INTEREST6` tries are built like the block
//! tries, from every `on: connect` policy covering outbound connects, in
//! any mode and with any action. Accepted and listening sockets are sent
//! when some policy covers their direction and, when every such policy
//! names `ports`, only on those local ports and protocols (`LOCAL_PORTS`).
//! Process conditions (`when`, `unless`) and, for accepted connections,
//! the remote address are left to the agent, which evaluates every sent
//! event exactly: the filter over-approximates, never under.
use std::{cmp::Reverse, collections::BTreeMap, sync::Arc};

use ipnet::IpNet;
use reflex_wire::{BlockRule, LossFamily, net::interest};
use tokio::sync::watch;

use super::{BlockPolicy, Rules, build, outbound, port_rule, reduce, remove_stale, v4_key, v6_key};
use crate::{
    loader::InterestMaps,
    policy::{PolicySet, model::Trigger, spec::Direction},
    telemetry::Metrics,
};

/// What the connect filter lets through for a policy set.
#[derive(Debug, Default)]
pub struct Interest {
    /// The `reflex_wire::net::interest` bits, [`interest::FILTERING`] included.
    pub bits: u32,
    /// Outbound destinations wanted (port ranges per protocol class).
    pub outbound: Rules,
    /// Local ports wanted of accepted and listening sockets, by
    /// `interest::local` entry; in force under the `*_PORTS` bits.
    pub local: [BlockRule; interest::local::COUNT as usize],
}

impl Interest {
    /// Whether an outbound connect to `addr`:`port` over protocol number
    /// `protocol` would leave the kernel (the trie lookup the hooks make).
    pub fn wants_outbound(&self, addr: std::net::IpAddr, port: u16, protocol: u32) -> bool {
        self.bits & interest::OUTBOUND != 0
            && self
                .outbound
                .lookup(addr)
                .is_some_and(|r| r.covers(port, protocol))
    }

    /// Whether an accepted (`inbound`) or listening socket on local `port`
    /// over `protocol` would leave the kernel (what the probe decides).
    pub fn wants_local(&self, inbound: bool, port: u16, protocol: u32) -> bool {
        let (_, direction, by_port, entry) = LOCAL[usize::from(!inbound)];
        self.bits & direction != 0
            && (self.bits & by_port == 0 || self.local[entry].covers(port, protocol))
    }
}

/// The directions filtered by local port: the direction, its bit, its
/// by-port bit and its `LOCAL_PORTS` entry.
const LOCAL: [(Direction, u32, u32, usize); 2] = [
    (
        Direction::Inbound,
        interest::INBOUND,
        interest::INBOUND_PORTS,
        interest::local::INBOUND as usize,
    ),
    (
        Direction::Listen,
        interest::LISTEN,
        interest::LISTEN_PORTS,
        interest::local::LISTEN as usize,
    ),
];

/// The connect filter for `set`.
pub fn of(set: &PolicySet) -> Interest {
    let mut bits = interest::FILTERING;
    let mut outbound_policies = Vec::new();
    // Per `interest::local` entry: the policies covering that direction,
    // and whether every one of them names ports.
    let mut local: [(Vec<BlockPolicy>, bool); 2] = [(Vec::new(), true), (Vec::new(), true)];
    for policy in set.policies() {
        let Trigger::Connect(t) = &policy.trigger else {
            continue;
        };
        for (direction, bit, _, entry) in LOCAL {
            if t.direction.is_empty() || t.direction.contains(&direction) {
                bits |= bit;
                let (policies, by_port) = &mut local[entry];
                policies.push(reduce(&policy.name, t));
                *by_port &= !t.ports.is_empty();
            }
        }
        if outbound(t) {
            bits |= interest::OUTBOUND;
            outbound_policies.push(reduce(&policy.name, t));
        }
    }
    let mut rules = [BlockRule::default(); interest::local::COUNT as usize];
    for (_, bit, by_port_bit, entry) in LOCAL {
        let (policies, by_port) = &local[entry];
        if bits & bit != 0 && *by_port {
            bits |= by_port_bit;
        }
        // Ranges joined to fit only send more: nothing to count.
        rules[entry] = port_rule(policies.iter()).0;
    }
    Interest {
        bits,
        outbound: build(&outbound_policies),
        local: rules,
    }
}

/// The filter in force, mirrored into the kernel.
pub struct InterestTable {
    maps: InterestMaps,
    applied: BTreeMap<IpNet, BlockRule>,
    /// The bits in the kernel now.
    bits: u32,
    metrics: Metrics,
}

impl InterestTable {
    /// A table writing to `maps`, reporting in `metrics`.
    pub fn new(maps: InterestMaps, metrics: Metrics) -> Self {
        for map in ["ipv4", "ipv6"] {
            metrics
                .kernel
                .filter_capacity
                .with_label_values(&[map])
                .set(i64::from(maps.room));
            metrics
                .kernel
                .filter_entries
                .with_label_values(&[map])
                .set(0);
        }
        Self {
            maps,
            applied: BTreeMap::new(),
            // As the loader leaves them for `reflex run`.
            bits: interest::FILTERING,
            metrics,
        }
    }

    /// Keeps the kernel filter equal to that of each set published on
    /// `policies`, until its sender is gone.
    pub async fn follow(mut self, mut policies: watch::Receiver<Arc<PolicySet>>) {
        while policies.changed().await.is_ok() {
            let set = policies.borrow_and_update().clone();
            self.configure(&set);
        }
    }

    /// Replaces the kernel filter by that of `set`. As for the block
    /// tries, new and changed entries go in longest prefix first and stale
    /// ones leave shortest first, under the directions of both sets, so
    /// that each connect meets the old filter or the new one; accepted
    /// and listening sockets are not filtered by port while their ports
    /// change. If the maps cannot hold the set, every connect is sent
    /// (logged, and `reflex_kernel_filter_active{family="connect"}` is 0).
    pub fn configure(&mut self, set: &PolicySet) {
        let wanted = of(set);
        let by_port = interest::INBOUND_PORTS | interest::LISTEN_PORTS;
        let mut complete = self.set_bits((self.bits | wanted.bits) & !by_port).is_ok();
        for (entry, rule) in wanted.local.iter().enumerate() {
            if let Err(err) = self.maps.local.set(entry as u32, rule, 0) {
                tracing::error!(%err, "setting the connect filter's local ports; every connect is sent");
                complete = false;
            }
        }
        let (v4, v6) = wanted.outbound.counts();
        let room = self.maps.room as usize;
        if v4.max(v6) > room {
            tracing::error!(
                ipv4 = v4,
                ipv6 = v6,
                room,
                "the connect policies name more prefixes than the kernel filter was made for (connect_filter.max_prefixes, or what the set at start needed); every connect is sent"
            );
            complete = false;
        }
        let mut changed: Vec<(&IpNet, &BlockRule)> = wanted
            .outbound
            .entries
            .iter()
            .filter(|(net, rule)| complete && self.applied.get(net) != Some(rule))
            .collect();
        changed.sort_by_key(|(net, _)| Reverse(net.prefix_len()));
        for (net, rule) in changed {
            let inserted = match net {
                IpNet::V4(n) => self.maps.v4.insert(&v4_key(*n), rule, 0),
                IpNet::V6(n) => self.maps.v6.insert(&v6_key(*n), rule, 0),
            };
            match inserted {
                Ok(()) => {
                    self.applied.insert(*net, *rule);
                }
                Err(err) => {
                    tracing::error!(%err, %net, "installing a connect filter entry; every connect is sent");
                    complete = false;
                }
            }
        }
        let stale = remove_stale(
            &mut self.applied,
            &wanted.outbound.entries,
            &mut self.maps.v4,
            &mut self.maps.v6,
        );
        for (net, err) in stale {
            // A stale entry only lets more through.
            tracing::warn!(%err, %net, "removing a connect filter entry");
        }
        let v4 = self
            .applied
            .keys()
            .filter(|n| matches!(n, IpNet::V4(_)))
            .count();
        for (map, count) in [("ipv4", v4), ("ipv6", self.applied.len() - v4)] {
            self.metrics
                .kernel
                .filter_entries
                .with_label_values(&[map])
                .set(count as i64);
        }
        let bits = if complete { wanted.bits } else { 0 };
        let active = self.set_bits(bits).is_ok() && complete;
        self.metrics
            .kernel
            .filter_active
            .with_label_values(&[LossFamily::Connect.label()])
            .set(i64::from(active));
        tracing::info!(
            active,
            outbound_prefixes = wanted.outbound.entries.len(),
            inbound = wanted.bits & interest::INBOUND != 0,
            listen = wanted.bits & interest::LISTEN != 0,
            by_local_port = wanted.bits & by_port != 0,
            "connect filter in force"
        );
    }

    fn set_bits(&mut self, bits: u32) -> Result<(), aya::maps::MapError> {
        let set = self.maps.filter.set(0, bits, 0);
        match &set {
            Ok(()) => self.bits = bits,
            Err(err) => tracing::error!(%err, "setting the connect filter"),
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, path::Path};

    use reflex_wire::net::proto;

    use super::*;
    use crate::policy::{compile, load};

    fn set(text: &str) -> PolicySet {
        let (sources, mut errors) = load::parse_source(Path::new("t.yaml"), text);
        let policies = compile::compile_all(sources, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        PolicySet::new(policies)
    }

    /// Whether some policy of `set` matches this outbound connect, as the
    /// engine decides.
    fn matched(set: &PolicySet, addr: IpAddr, port: u16, protocol: u32) -> bool {
        let c = crate::blocks::tests::outbound_connect(addr, port, protocol);
        set.policies()
            .iter()
            .any(|p| matches!(&p.trigger, Trigger::Connect(t) if t.matches(&c)))
    }

    #[test]
    fn the_filter_sends_exactly_what_the_policies_match() {
        let set = set(concat!(
            "name: a\non:\n  connect: { remote: [\"10.0.0.0/8\"], except: [\"10.1.0.0/16\"], ports: [22, \"8000-8080\"] }\ndo: [alert]\n---\n",
            "name: b\nmode: enforce\non:\n  connect: { direction: [outbound], remote: [\"10.1.2.0/24\", \"2001:db8::/32\"], protocol: [udp] }\ndo: [block]\n---\n",
            "name: c\non:\n  connect: { direction: [inbound], remote: [\"127.0.0.0/8\"] }\ndo: [alert]\n",
        ));
        let wanted = of(&set);
        let addrs = [
            "10.0.0.1",
            "10.1.0.1",
            "10.1.2.3",
            "10.2.2.3",
            "11.0.0.1",
            "127.0.0.1",
            "2001:db8::1",
            "2001:db9::1",
            "::1",
            "::ffff:10.1.2.3",
        ];
        for addr in addrs.map(ip) {
            for port in [0, 21, 22, 23, 7999, 8000, 8080, 8081, 65535] {
                for protocol in [proto::TCP, proto::UDP, 132] {
                    assert_eq!(
                        wanted.wants_outbound(addr, port, protocol),
                        matched(&set, addr, port, protocol),
                        "{addr}:{port}/{protocol}"
                    );
                }
            }
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn no_connect_policy_filters_everything() {
        let wanted = of(&set(
            "name: f\non:\n  file: { paths: [/etc/hosts] }\ndo: [alert]\n",
        ));
        assert_eq!(wanted.bits, interest::FILTERING);
        assert!(!wanted.wants_outbound(ip("127.0.0.1"), 53, proto::UDP));
    }

    #[test]
    fn outbound_interest_follows_prefix_port_protocol_and_except() {
        let wanted = of(&set(
            "name: c\non:\n  connect: { direction: [outbound], remote: [\"10.0.0.0/8\"], except: [\"10.1.0.0/16\"], ports: [53], protocol: [udp] }\ndo: [alert]\n",
        ));
        assert_eq!(wanted.bits, interest::FILTERING | interest::OUTBOUND);
        assert!(wanted.wants_outbound(ip("10.2.3.4"), 53, proto::UDP));
        assert!(!wanted.wants_outbound(ip("10.2.3.4"), 54, proto::UDP));
        assert!(!wanted.wants_outbound(ip("10.2.3.4"), 53, proto::TCP));
        assert!(!wanted.wants_outbound(ip("10.1.3.4"), 53, proto::UDP));
        assert!(!wanted.wants_outbound(ip("127.0.0.1"), 53, proto::UDP));
        assert!(!wanted.wants_outbound(ip("::1"), 53, proto::UDP));
        // IPv4-mapped addresses are judged as IPv4, as the hooks do.
        assert!(wanted.wants_outbound(ip("::ffff:10.2.3.4"), 53, proto::UDP));
    }

    #[test]
    fn a_policy_without_conditions_wants_every_direction() {
        let wanted = of(&set("name: all\non:\n  connect: {}\ndo: [alert]\n"));
        assert_eq!(
            wanted.bits,
            interest::FILTERING | interest::OUTBOUND | interest::INBOUND | interest::LISTEN
        );
        assert!(wanted.wants_outbound(ip("192.0.2.1"), 1, 132));
        assert!(wanted.wants_outbound(ip("2001:db8::1"), 443, proto::TCP));
    }

    #[test]
    fn inbound_and_listen_policies_want_only_their_direction() {
        let wanted = of(&set(
            "name: l\non:\n  connect: { direction: [listen], ports: [22] }\ndo: [alert]\n",
        ));
        assert_eq!(
            wanted.bits,
            interest::FILTERING | interest::LISTEN | interest::LISTEN_PORTS
        );
        assert!(!wanted.wants_outbound(ip("127.0.0.1"), 22, proto::TCP));
        assert!(!wanted.wants_local(true, 22, proto::TCP));
    }

    #[test]
    fn accepted_and_listening_sockets_are_sent_on_the_local_ports_policies_name() {
        let set = set(concat!(
            "name: in\non:\n  connect: { direction: [inbound], remote: [\"10.0.0.0/8\"], ports: [22, \"8000-8080\"], protocol: [tcp] }\ndo: [alert]\n---\n",
            "name: l\non:\n  connect: { direction: [listen], ports: [53] }\ndo: [alert]\n",
        ));
        let wanted = of(&set);
        let by_port = interest::INBOUND_PORTS | interest::LISTEN_PORTS;
        assert_eq!(wanted.bits & by_port, by_port);
        for direction in [Direction::Inbound, Direction::Listen] {
            for port in [0, 21, 22, 23, 53, 7999, 8000, 8080, 8081, 65535] {
                for protocol in [proto::TCP, proto::UDP, 132] {
                    // From inside the inbound policy's `remote`: the filter
                    // leaves the remote address to the engine.
                    let mut c =
                        crate::blocks::tests::outbound_connect(ip("10.1.2.3"), 40_000, protocol);
                    c.direction = direction;
                    c.local_port = port;
                    let matched = set
                        .policies()
                        .iter()
                        .any(|p| matches!(&p.trigger, Trigger::Connect(t) if t.matches(&c)));
                    assert_eq!(
                        wanted.wants_local(direction == Direction::Inbound, port, protocol),
                        matched,
                        "{direction:?} {port}/{protocol}"
                    );
                }
            }
        }
        // One policy of a direction without ports: every port is sent.
        let wanted = of(&self::set(concat!(
            "name: in\non:\n  connect: { direction: [inbound], ports: [22] }\ndo: [alert]\n---\n",
            "name: any\non:\n  connect: { direction: [inbound] }\ndo: [alert]\n",
        )));
        assert_eq!(wanted.bits & interest::INBOUND_PORTS, 0);
        assert!(wanted.wants_local(true, 1, proto::UDP));
        assert!(!wanted.wants_local(false, 22, proto::TCP));
    }

    #[test]
    fn monitor_and_enforce_policies_both_count() {
        for mode in ["monitor", "enforce"] {
            let wanted = of(&set(&format!(
                "name: b\nmode: {mode}\non:\n  connect: {{ remote: [\"192.0.2.0/24\"], ports: [443] }}\ndo: [alert]\n"
            )));
            assert!(
                wanted.wants_outbound(ip("192.0.2.7"), 443, proto::TCP),
                "{mode}"
            );
        }
    }
}
