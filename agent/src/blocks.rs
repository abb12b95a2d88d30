//! The connect family's kernel side as the agent drives it: enforcing
//! `block` policies become LPM-trie rules the connect hooks consult.
use std::{collections::BTreeMap, sync::Arc};

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use reflex_wire::{BlockRule, net::MAX_RANGES};
use tokio::sync::watch;

use crate::{
    loader::BlockMaps,
    policy::{
        Action, Mode, PolicySet,
        model::Trigger,
        spec::{Direction, Protocol},
    },
};

/// The rules in force, mirrored into the kernel.
pub struct BlockTable {
    maps: BlockMaps,
    applied: Vec<IpNet>,
}

impl BlockTable {
    /// A table writing to `maps`.
    pub fn new(maps: BlockMaps) -> Self {
        Self {
            maps,
            applied: Vec::new(),
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
    pub fn configure(&mut self, set: &PolicySet) -> usize {
        let rules = rules(set);
        for net in std::mem::take(&mut self.applied) {
            let _ = match net {
                IpNet::V4(n) => self.maps.v4.remove(&Key::new(
                    n.prefix_len() as u32,
                    u32::from_ne_bytes(n.addr().octets()),
                )),
                IpNet::V6(n) => self
                    .maps
                    .v6
                    .remove(&Key::new(n.prefix_len() as u32, words(n.addr().octets()))),
            };
        }
        for (net, rule) in &rules {
            let result = match net {
                IpNet::V4(n) => self.maps.v4.insert(
                    &Key::new(n.prefix_len() as u32, u32::from_ne_bytes(n.addr().octets())),
                    rule,
                    0,
                ),
                IpNet::V6(n) => self.maps.v6.insert(
                    &Key::new(n.prefix_len() as u32, words(n.addr().octets())),
                    rule,
                    0,
                ),
            };
            match result {
                Ok(()) => self.applied.push(*net),
                Err(err) => tracing::error!(%err, %net, "installing a block rule"),
            }
        }
        rules.len()
    }
}

fn words(octets: [u8; 16]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, chunk) in octets.chunks_exact(4).enumerate() {
        w[i] = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    w
}

/// The LPM rules of the enforcing `block` policies: one per prefix, ports
/// and protocols merged; an `except` prefix lets traffic through.
pub fn rules(set: &PolicySet) -> BTreeMap<IpNet, BlockRule> {
    let mut rules: BTreeMap<IpNet, BlockRule> = BTreeMap::new();
    for policy in set.policies() {
        let Trigger::Connect(t) = &policy.trigger else {
            continue;
        };
        if policy.mode != Mode::Enforce
            || !policy.actions.iter().any(|a| matches!(a, Action::Block))
        {
            continue;
        }
        if !t.direction.is_empty() && !t.direction.contains(&Direction::Outbound) {
            continue;
        }
        let nets: Vec<IpNet> = if t.remote.is_empty() {
            vec![
                "0.0.0.0/0".parse().expect("net"),
                "::/0".parse().expect("net"),
            ]
        } else {
            t.remote.iter().map(|c| c.0).collect()
        };
        let protocols = t.protocol.iter().fold(0, |bits, p| {
            bits | match p {
                Protocol::Tcp => 1,
                Protocol::Udp => 2,
            }
        });
        for net in nets {
            let rule = rules.entry(net).or_default();
            if rule.allow != 0 {
                continue;
            }
            let any_port = t.ports.is_empty();
            let first =
                rule.ranges == 0 && rule.protocols == 0 && rule.ports == [[0; 2]; MAX_RANGES];
            rule.protocols = if first {
                protocols
            } else if protocols == 0 || rule.protocols == 0 {
                0
            } else {
                rule.protocols | protocols
            };
            if any_port || (!first && rule.ranges == 0) {
                rule.ranges = 0;
                continue;
            }
            for p in &t.ports {
                if (rule.ranges as usize) < MAX_RANGES {
                    rule.ports[rule.ranges as usize] = [p.first, p.last];
                    rule.ranges += 1;
                } else {
                    tracing::warn!(policy = policy.name, %net, "more than {MAX_RANGES} port ranges for one prefix: blocking every port");
                    rule.ranges = 0;
                    break;
                }
            }
        }
        for except in &t.except {
            rules.insert(
                except.0,
                BlockRule {
                    allow: 1,
                    ..BlockRule::default()
                },
            );
        }
    }
    rules
}
