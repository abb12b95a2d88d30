//! The trie construction against the policies' own meaning.
use std::{net::IpAddr, path::Path};

use reflex_wire::net::{MAX_RANGES, proto};

use super::*;
use crate::{
    events::connect::{Connect, Direction as EventDirection, Protocol as EventProtocol},
    policy::{compile, load},
};

fn set(text: &str) -> PolicySet {
    let (sources, mut errors) = load::parse_source(Path::new("t.yaml"), text);
    let policies = compile::compile_all(sources, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    PolicySet::new(policies)
}

/// What the kernel decides for `addr:port` over `protocol`.
fn refused(rules: &Rules, addr: &str, port: u16, protocol: u32) -> bool {
    let addr: IpAddr = addr.parse().expect("address");
    rules
        .lookup(addr)
        .is_some_and(|rule| rule.refuses(port, protocol))
}

/// An outbound connect to `addr`:`port` over `protocol`, as the engine
/// sees it.
pub(super) fn outbound_connect(addr: IpAddr, port: u16, protocol: u32) -> Connect {
    Connect {
        direction: EventDirection::Outbound,
        protocol: match protocol {
            proto::TCP => Some(EventProtocol::Tcp),
            proto::UDP => Some(EventProtocol::Udp),
            _ => None,
        },
        local_addr: IpAddr::from([0, 0, 0, 0]),
        local_port: 0,
        remote_addr: addr,
        remote_port: port,
        blocked: false,
        datagram: false,
        suppressed: 0,
    }
}

/// What the policies say: some enforcing block policy matches.
fn meant(set: &PolicySet, addr: IpAddr, port: u16, protocol: u32) -> bool {
    let c = outbound_connect(addr, port, protocol);
    set.policies().iter().any(|p| {
        p.mode == Mode::Enforce
            && p.actions.iter().any(|a| matches!(a, Action::Block))
            && matches!(&p.trigger, Trigger::Connect(t) if t.matches(&c))
    })
}

fn policy(name: &str, remote: &str, except: &str, ports: &str, protocol: &str) -> String {
    format!(
        "name: {name}\nmode: enforce\non:\n  connect: {{ direction: [outbound], remote: [{remote}], except: [{except}], ports: [{ports}], protocol: [{protocol}] }}\ndo: [block]\n---\n"
    )
}

#[test]
fn a_narrower_prefix_does_not_hide_a_broader_one() {
    let set =
        set(&(policy("a", "10.0.0.0/8", "", "25", "") + &policy("b", "10.1.0.0/16", "", "22", "")));
    let rules = rules(&set);
    assert!(
        refused(&rules, "10.1.2.3", 25, proto::TCP),
        "a holds inside b"
    );
    assert!(refused(&rules, "10.1.2.3", 22, proto::TCP));
    assert!(!refused(&rules, "10.2.0.1", 22, proto::TCP));
    assert!(!refused(&rules, "10.1.2.3", 80, proto::TCP));
}

#[test]
fn one_policys_except_opens_no_hole_in_another() {
    // The case: a's except at 10/8 sat on b's rule at the same prefix.
    let broad = set(&(policy("a", "0.0.0.0/0", "10.0.0.0/8", "25", "")
        + &policy("b", "10.0.0.0/8", "", "", "")));
    let rules = super::rules(&broad);
    assert!(refused(&rules, "10.0.0.5", 22, proto::TCP), "b covers 10/8");
    assert!(refused(&rules, "10.0.0.5", 25, proto::UDP));
    assert!(refused(&rules, "192.0.2.1", 25, proto::TCP), "a elsewhere");
    assert!(!refused(&rules, "192.0.2.1", 22, proto::TCP));

    // The loopback case of the root test: a's except at 127.0.0.8/29 must
    // not open b's 127.0.0.9/32.
    let loopback = set(&(policy("a", "127.0.0.0/8", "127.0.0.8/29", "4001", "")
        + &policy("b", "127.0.0.9/32", "", "4002", "")));
    let rules = super::rules(&loopback);
    assert!(refused(&rules, "127.0.0.9", 4002, proto::TCP));
    assert!(!refused(&rules, "127.0.0.9", 4001, proto::TCP));
    assert!(refused(&rules, "127.0.0.3", 4001, proto::TCP));
    assert!(!refused(&rules, "127.0.0.3", 4002, proto::TCP));
}

#[test]
fn equal_prefixes_keep_each_policys_ports_and_protocols() {
    let set = set(&(policy("a", "10.0.0.0/8", "", "25", "tcp")
        + &policy("b", "10.0.0.0/8", "", "53", "udp")
        + &policy("c", "10.0.0.0/8", "10.9.0.0/16", "1000-2000", "")));
    let rules = rules(&set);
    assert_eq!(rules.entries.len(), 2);
    assert!(refused(&rules, "10.0.0.1", 25, proto::TCP));
    assert!(!refused(&rules, "10.0.0.1", 25, proto::UDP));
    assert!(refused(&rules, "10.0.0.1", 53, proto::UDP));
    assert!(!refused(&rules, "10.0.0.1", 53, proto::TCP));
    assert!(refused(&rules, "10.0.0.1", 1500, proto::UDP));
    // c's except leaves a and b in force.
    assert!(!refused(&rules, "10.9.0.1", 1500, proto::TCP));
    assert!(refused(&rules, "10.9.0.1", 25, proto::TCP));
    assert!(refused(&rules, "10.9.0.1", 53, proto::UDP));
    // Other protocols only by policies naming none (c).
    assert!(refused(&rules, "10.0.0.1", 1500, 132));
    assert!(!refused(&rules, "10.0.0.1", 25, 132));
}

#[test]
fn ipv4_mapped_spellings_are_ipv4() {
    let set = set(&policy("a", "\"::ffff:127.0.0.0/104\"", "", "7", "tcp"));
    let rules = rules(&set);
    let net: IpNet = "127.0.0.0/8".parse().unwrap();
    assert!(rules.entries.contains_key(&net));
    assert!(refused(&rules, "127.0.0.2", 7, proto::TCP));
    assert!(refused(&rules, "::ffff:127.0.0.2", 7, proto::TCP));
    assert!(refused(&rules, "::FFFF:7f00:2", 7, proto::TCP));
    assert!(
        !refused(&rules, "::127.0.0.2", 7, proto::TCP),
        "IPv4-compatible is IPv6"
    );
}

#[test]
fn too_many_port_ranges_are_joined_never_dropped() {
    let ports: Vec<String> = (0..MAX_RANGES as u16 + 4)
        .map(|i| (1000 + i * 10).to_string())
        .collect();
    let set = set(&policy("a", "10.0.0.0/8", "", &ports.join(", "), "tcp"));
    let rules = rules(&set);
    assert_eq!(rules.joined, [("10.0.0.0/8".parse().unwrap(), class::TCP)]);
    for port in &ports {
        assert!(refused(
            &rules,
            "10.0.0.1",
            port.parse().unwrap(),
            proto::TCP
        ));
    }
    let rule = rules.lookup("10.0.0.1".parse().unwrap()).unwrap();
    assert_eq!(rule.counts, [MAX_RANGES as u32, 0, 0]);
    assert!(!refused(&rules, "10.0.0.1", 999, proto::TCP));
}

#[test]
fn merged_ranges_are_sorted_and_disjoint() {
    assert_eq!(
        merge(vec![
            (5, 9),
            (1, 3),
            (4, 4),
            (20, 30),
            (25, 26),
            (65535, 65535)
        ]),
        [(1, 9), (20, 30), (65535, 65535)]
    );
    assert_eq!(merge(vec![(0, 65535), (80, 80)]), [(0, 65535)]);
}

#[test]
fn monitor_mode_and_other_directions_install_nothing() {
    let set = set(
        "name: m\nmode: monitor\non: { connect: { remote: [10.0.0.0/8] } }\ndo: [block]\n---\n\
         name: alert-only\nmode: enforce\non: { connect: { remote: [10.0.0.0/8] } }\ndo: [alert]\n",
    );
    assert!(rules(&set).is_empty());
}

/// Random overlapping policies: the longest match gives, for every probe,
/// what evaluating each policy on its own gives.
#[test]
fn the_longest_match_agrees_with_every_policy_on_its_own() {
    let mut seed = 0x2545_f491_u32;
    let mut next = move |n: u32| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed % n
    };
    let nets = [
        "10.0.0.0/8",
        "10.0.0.0/16",
        "10.0.0.0/24",
        "10.0.0.8/29",
        "10.0.0.9/32",
        "10.0.1.0/24",
        "10.128.0.0/9",
        "0.0.0.0/0",
        "\"::/0\"",
        "\"fd00::/8\"",
        "\"fd00::/64\"",
        "\"::ffff:10.0.0.0/120\"",
    ];
    let ports = ["", "1", "2", "1-3", "2, 4", "3-5"];
    let protocols = ["", "tcp", "udp", "tcp, udp"];
    let addrs = [
        "10.0.0.1",
        "10.0.0.9",
        "10.0.0.10",
        "10.0.1.7",
        "10.200.0.1",
        "192.0.2.1",
        "fd00::1",
        "fd00:0:0:1::1",
        "2001:db8::1",
        "::ffff:10.0.0.9",
    ];
    for round in 0..300 {
        let mut text = String::new();
        for p in 0..=next(4) {
            let pick = |next: &mut dyn FnMut(u32) -> u32, max: u32| {
                (0..next(max))
                    .map(|_| nets[next(nets.len() as u32) as usize])
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let remote = pick(&mut next, 3);
            let except = pick(&mut next, 3);
            let port = ports[next(ports.len() as u32) as usize];
            let protocol = protocols[next(protocols.len() as u32) as usize];
            text += &policy(&format!("p{p}"), &remote, &except, port, protocol);
        }
        let set = set(&text);
        let rules = rules(&set);
        for addr in addrs {
            let ip: IpAddr = addr.parse().unwrap();
            for port in 0..=6 {
                for protocol in [proto::TCP, proto::UDP, 132] {
                    assert_eq!(
                        refused(&rules, addr, port, protocol),
                        meant(&set, ip, port, protocol),
                        "round {round}: {addr}:{port}/{protocol} under\n{text}"
                    );
                }
            }
        }
    }
}
