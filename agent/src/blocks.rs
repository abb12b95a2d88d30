//! The connect family's kernel side as the agent drives it: enforcing
//! `block` policies become the LPM-trie entries the connect and sendmsg
//! hooks consult.
//!
//! Several policies may cover one address, each with its own ports,
//! protocols and `except`s. The tries answer with the entry of the longest
//! prefix holding the address, so every prefix any policy names (in
//! `remote` or `except`) gets an entry holding the ports of exactly the
//! policies with a `remote` containing that prefix and no `except`
//! containing it. The prefixes holding an address form a chain, so its
//! longest match is covered by a policy exactly when the address is: no
//! policy's prefix or `except` hides another's.
use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use aya::maps::{LpmTrie, MapData, MapError, lpm_trie::Key};
use ipnet::IpNet;
use reflex_wire::{
    BlockRule,
    net::{MAX_RANGES, class},
};
use tokio::sync::watch;

use crate::{
    loader::BlockMaps,
    policy::{
        Action, Mode, PolicySet,
        model::{ConnectTrigger, Trigger},
        spec::{Direction, Protocol},
    },
    telemetry::Metrics,
};

pub mod interest;
pub mod room;
#[cfg(test)]
mod tests;

/// An enforcing `block` policy, reduced to what the kernel decides on.
#[derive(Clone, Debug)]
pub struct BlockPolicy {
    /// The policy's name, for logs.
    pub name: String,
    /// Networks it covers (both whole families when the policy names none).
    pub remote: Vec<IpNet>,
    /// Networks it leaves alone.
    pub except: Vec<IpNet>,
    /// Protocol classes it refuses, indexed by [`class`].
    pub classes: [bool; class::COUNT],
    /// Remote port ranges it refuses (every port when the policy names none).
    pub ports: Vec<(u16, u16)>,
}

/// The enforcing `block` policies of `set` that apply to outbound traffic.
pub fn block_policies(set: &PolicySet) -> Vec<BlockPolicy> {
    set.policies()
        .iter()
        .filter_map(|policy| {
            let Trigger::Connect(t) = &policy.trigger else {
                return None;
            };
            let blocks = policy.mode == Mode::Enforce
                && policy.actions.iter().any(|a| matches!(a, Action::Block));
            (blocks && outbound(t)).then(|| reduce(&policy.name, t))
        })
        .collect()
}

/// Whether a connect trigger covers outbound connects.
pub fn outbound(t: &ConnectTrigger) -> bool {
    t.direction.is_empty() || t.direction.contains(&Direction::Outbound)
}

/// The outbound conditions of policy `name`'s trigger `t`, as the tries
/// hold them.
pub fn reduce(name: &str, t: &ConnectTrigger) -> BlockPolicy {
    let remote = if t.remote.is_empty() {
        vec![
            "0.0.0.0/0".parse().expect("net"),
            "::/0".parse().expect("net"),
        ]
    } else {
        t.remote.iter().map(|c| c.0).collect()
    };
    let classes = if t.protocol.is_empty() {
        [true; class::COUNT]
    } else {
        let mut classes = [false; class::COUNT];
        for p in &t.protocol {
            classes[match p {
                Protocol::Tcp => class::TCP,
                Protocol::Udp => class::UDP,
            }] = true;
        }
        classes
    };
    let ports = if t.ports.is_empty() {
        vec![(0, u16::MAX)]
    } else {
        t.ports.iter().map(|p| (p.first, p.last)).collect()
    };
    BlockPolicy {
        name: name.to_string(),
        remote,
        except: t.except.iter().map(|c| c.0).collect(),
        classes,
        ports,
    }
}

/// The trie entries for a set of block policies.
#[derive(Debug, Default)]
pub struct Rules {
    /// One entry per prefix named by any policy.
    pub entries: BTreeMap<IpNet, BlockRule>,
    /// (prefix, protocol class) whose ranges exceeded [`MAX_RANGES`] and
    /// were joined: the ports between the joined ranges are refused too.
    pub joined: Vec<(IpNet, usize)>,
}

impl Rules {
    /// Whether no block policy is in force.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries per address family: (IPv4, IPv6).
    pub fn counts(&self) -> (usize, usize) {
        let v4 = self
            .entries
            .keys()
            .filter(|n| matches!(n, IpNet::V4(_)))
            .count();
        (v4, self.entries.len() - v4)
    }

    /// The entry the kernel would find for `addr` (longest prefix match;
    /// an IPv4-mapped address is looked up as IPv4, as the hooks do).
    pub fn lookup(&self, addr: std::net::IpAddr) -> Option<&BlockRule> {
        let addr = addr.to_canonical();
        let longest = match addr {
            std::net::IpAddr::V4(_) => 32,
            std::net::IpAddr::V6(_) => 128,
        };
        (0..=longest).rev().find_map(|len| {
            let net = IpNet::new(addr, len)
                .expect("length within the family")
                .trunc();
            self.entries.get(&net)
        })
    }
}

/// The trie entries of the enforcing `block` policies in `set`.
pub fn rules(set: &PolicySet) -> Rules {
    build(&block_policies(set))
}

/// The trie entries for `policies` (see the module documentation).
pub fn build(policies: &[BlockPolicy]) -> Rules {
    // Prefix → (policies naming it in `remote`, policies naming it in `except`).
    let mut named: HashMap<IpNet, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (i, policy) in policies.iter().enumerate() {
        for net in &policy.remote {
            named.entry(*net).or_default().0.push(i);
        }
        for net in &policy.except {
            named.entry(*net).or_default().1.push(i);
        }
    }
    let mut rules = Rules::default();
    for prefix in named.keys() {
        let (mut covering, mut excepted) = (Vec::new(), Vec::new());
        for len in 0..=prefix.prefix_len() {
            let outer = IpNet::new(prefix.addr(), len)
                .expect("no longer than the prefix")
                .trunc();
            if let Some((remote, except)) = named.get(&outer) {
                covering.extend_from_slice(remote);
                excepted.extend_from_slice(except);
            }
        }
        covering.sort_unstable();
        covering.dedup();
        let (rule, joined) = port_rule(
            covering
                .iter()
                .filter(|i| !excepted.contains(i))
                .map(|&i| &policies[i]),
        );
        rules
            .joined
            .extend(joined.into_iter().map(|c| (*prefix, c)));
        rules.entries.insert(*prefix, rule);
    }
    rules.joined.sort_unstable();
    rules
}

/// The ports and protocol classes of `policies` together, as one entry;
/// with the protocol classes whose ranges had to be joined to fit.
pub fn port_rule<'a>(policies: impl Iterator<Item = &'a BlockPolicy>) -> (BlockRule, Vec<usize>) {
    let mut ports: [Vec<(u16, u16)>; class::COUNT] = Default::default();
    for policy in policies {
        for (c, ranges) in ports.iter_mut().enumerate() {
            if policy.classes[c] {
                ranges.extend_from_slice(&policy.ports);
            }
        }
    }
    let mut rule = BlockRule::default();
    let mut joined_classes = Vec::new();
    for (c, ranges) in ports.into_iter().enumerate() {
        let (ranges, joined) = fit(merge(ranges));
        if joined {
            joined_classes.push(c);
        }
        rule.counts[c] = ranges.len() as u32;
        for (slot, (first, last)) in rule.ranges[c].iter_mut().zip(ranges) {
            *slot = [first, last];
        }
    }
    (rule, joined_classes)
}

/// Sorted, disjoint, non-adjacent ranges covering the same ports.
fn merge(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if u32::from(first) <= u32::from(prev.1) + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// At most [`MAX_RANGES`] ranges covering `ranges`: while there are more,
/// the two separated by the smallest gap are joined. Refusing a few ports
/// no policy names is the lesser harm: dropping a range would let through
/// traffic an enforcing policy promises to refuse. Returns whether any
/// were joined.
fn fit(mut ranges: Vec<(u16, u16)>) -> (Vec<(u16, u16)>, bool) {
    let joined = ranges.len() > MAX_RANGES;
    while ranges.len() > MAX_RANGES {
        let at = (0..ranges.len() - 1)
            .min_by_key(|&i| ranges[i + 1].0 - ranges[i].1)
            .expect("more than one range");
        ranges[at].1 = ranges[at + 1].1;
        ranges.remove(at + 1);
    }
    (ranges, joined)
}

/// The rules in force, mirrored into the kernel.
pub struct BlockTable {
    maps: BlockMaps,
    applied: BTreeMap<IpNet, BlockRule>,
    metrics: Metrics,
}

impl BlockTable {
    /// A table writing to `maps`, counting its problems in `metrics`.
    pub fn new(maps: BlockMaps, metrics: Metrics) -> Self {
        Self {
            maps,
            applied: BTreeMap::new(),
            metrics,
        }
    }

    /// Keeps the kernel rules equal to those of each set published on
    /// `policies`, until its sender is gone.
    pub async fn follow(mut self, mut policies: watch::Receiver<Arc<PolicySet>>) {
        while policies.changed().await.is_ok() {
            let set = policies.borrow_and_update().clone();
            let rules = self.configure(&set);
            tracing::info!(rules, "block rules in force");
        }
    }

    /// Replaces the kernel rules by those of the enforcing `block` policies
    /// in `set`; returns how many prefixes are in force.
    ///
    /// New and changed entries go in longest prefix first, then stale ones
    /// leave shortest first: at every step each address meets either its
    /// old decision or its new one, never a mix that neither set makes.
    pub fn configure(&mut self, set: &PolicySet) -> usize {
        let rules = rules(set);
        for (net, c) in &rules.joined {
            let protocol = ["tcp", "udp", "other"][*c];
            tracing::error!(%net, protocol, "more than {MAX_RANGES} separate port ranges for one prefix: the closest were joined, refusing the ports between them too");
            self.count_error("too_many_ports");
        }
        let mut changed: Vec<(&IpNet, &BlockRule)> = rules
            .entries
            .iter()
            .filter(|(net, rule)| self.applied.get(net) != Some(rule))
            .collect();
        changed.sort_by_key(|(net, _)| Reverse(net.prefix_len()));
        let mut failed = Vec::new();
        for (net, rule) in changed {
            match self.insert(net, rule) {
                Ok(()) => {
                    self.applied.insert(*net, *rule);
                }
                Err(err) => failed.push((net, rule, err)),
            }
        }
        let stale = remove_stale(
            &mut self.applied,
            &rules.entries,
            &mut self.maps.v4,
            &mut self.maps.v6,
        );
        for (net, err) in stale {
            tracing::error!(%err, %net, "removing a block rule");
        }
        // A full trie may have had room only once the stale entries left.
        for (net, rule, first) in failed {
            match self.insert(net, rule) {
                Ok(()) => {
                    self.applied.insert(*net, *rule);
                }
                Err(err) => {
                    tracing::error!(%err, %first, %net, "installing a block rule");
                    self.count_error("install_failed");
                }
            }
        }
        rules.entries.len()
    }

    fn insert(&mut self, net: &IpNet, rule: &BlockRule) -> Result<(), aya::maps::MapError> {
        match net {
            IpNet::V4(n) => self.maps.v4.insert(&v4_key(*n), rule, 0),
            IpNet::V6(n) => self.maps.v6.insert(&v6_key(*n), rule, 0),
        }
    }

    fn count_error(&self, reason: &str) {
        self.metrics
            .block_rule_errors
            .with_label_values(&[reason])
            .inc();
    }
}

/// Takes every prefix `wanted` lacks out of `applied` and the kernel tries
/// `v4`/`v6` (block rules or connect interest), shortest first: until the
/// longer ones leave, they keep deciding for the addresses they hold as
/// before. Returns the prefixes the kernel would not give up (they stay in
/// `applied`).
pub fn remove_stale(
    applied: &mut BTreeMap<IpNet, BlockRule>,
    wanted: &BTreeMap<IpNet, BlockRule>,
    v4: &mut LpmTrie<MapData, u32, BlockRule>,
    v6: &mut LpmTrie<MapData, [u32; 4], BlockRule>,
) -> Vec<(IpNet, MapError)> {
    let mut stale: Vec<IpNet> = applied
        .keys()
        .filter(|net| !wanted.contains_key(net))
        .copied()
        .collect();
    stale.sort_by_key(|net| net.prefix_len());
    let mut failed = Vec::new();
    for net in stale {
        let removed = match net {
            IpNet::V4(n) => v4.remove(&v4_key(n)),
            IpNet::V6(n) => v6.remove(&v6_key(n)),
        };
        match removed {
            Ok(()) => {
                applied.remove(&net);
            }
            Err(err) => failed.push((net, err)),
        }
    }
    failed
}

/// The trie key of an IPv4 prefix.
pub fn v4_key(n: ipnet::Ipv4Net) -> Key<u32> {
    Key::new(
        u32::from(n.prefix_len()),
        u32::from_ne_bytes(n.addr().octets()),
    )
}

/// The trie key of an IPv6 prefix.
pub fn v6_key(n: ipnet::Ipv6Net) -> Key<[u32; 4]> {
    let mut words = [0u32; 4];
    for (word, chunk) in words.iter_mut().zip(n.addr().octets().chunks_exact(4)) {
        *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Key::new(u32::from(n.prefix_len()), words)
}
