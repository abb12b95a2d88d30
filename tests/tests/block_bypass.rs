//! Ways past an enforcing `block` policy, each tried against the running
//! agent: IPv4-mapped IPv6 addresses, datagrams sent without `connect`
//! (`sendto`, `sendmsg`, `sendmmsg`), overlapping policies, and the other
//! doors an attacker would try (connect after `bind`, the unspecified
//! address `0.0.0.0` / `::` that the kernel sends to the local host, TCP
//! fast open, MPTCP, UDP-Lite, a connected UDP socket sending elsewhere). Loopback
//! only; every socket and listener here is the test's own.
use std::{
    io,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use reflex_tests::{Agent, Scratch, require_root, sockets};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);
const EPERM: i32 = libc::EPERM;

/// Alerts of `policy` for which `found` holds, read for `window`.
fn alerts(
    agent: &Agent,
    policy: &str,
    window: Duration,
    found: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(line) = agent.stdout_line(left, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["policy"] == policy && found(&v))
        }) else {
            break;
        };
        out.push(serde_json::from_str(&line).expect("alert JSON"));
    }
    out
}

/// The first alert of `policy` for which `found` holds.
fn alert(agent: &Agent, policy: &str, found: impl Fn(&Value) -> bool) -> Value {
    reflex_tests::policy_alert(agent, WAIT, policy, found)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

fn connect(to: &str) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr(to), Duration::from_secs(2))
}

fn assert_eperm<T: std::fmt::Debug>(result: io::Result<T>, what: &str) {
    match result {
        Err(e) if e.raw_os_error() == Some(EPERM) => {}
        other => panic!("{what}: expected EPERM, got {other:?}"),
    }
}

#[test]
fn ipv4_mapped_ipv6_addresses_are_judged_by_the_ipv4_rules() {
    require_root();
    let scratch = Scratch::new();
    scratch.policy(
        "mapped.yaml",
        r#"name: v4-rule
mode: enforce
on: { connect: { direction: [outbound], remote: ["127.0.0.2/32"], ports: [4751] } }
do: [block, alert]
---
name: mapped-spelling
mode: enforce
on: { connect: { direction: [outbound], remote: ["::ffff:127.0.0.0/104"], ports: [4752] } }
do: [block, alert]
"#,
    );
    let _blocked = TcpListener::bind("127.0.0.2:4751").expect("listen 127.0.0.2:4751");
    let _spelled = TcpListener::bind("127.0.0.3:4752").expect("listen 127.0.0.3:4752");
    let _open = TcpListener::bind("127.0.0.2:4753").expect("listen 127.0.0.2:4753");
    let agent = scratch.start();

    // TCP from an AF_INET6 socket to ::ffff:127.0.0.2.
    assert_eperm(
        connect("[::ffff:127.0.0.2]:4751"),
        "TCP to ::ffff:127.0.0.2",
    );
    let a = alert(&agent, "v4-rule", |v| {
        v["event"]["connect"]["protocol"] == "tcp"
    });
    assert_eq!(a["event"]["connect"]["remote_addr"], "127.0.0.2", "{a}");
    assert_eq!(a["event"]["connect"]["blocked"], true);
    // Upper case is the same address.
    assert_eperm(connect("[::FFFF:7F00:2]:4751"), "TCP to ::FFFF:7F00:2");
    // UDP connect and an unconnected datagram from an AF_INET6 socket.
    let udp = UdpSocket::bind("[::]:0").expect("v6 UDP socket");
    assert_eperm(
        udp.connect("[::ffff:127.0.0.2]:4751"),
        "UDP connect to ::ffff:127.0.0.2",
    );
    assert_eperm(
        udp.send_to(b"x", "[::ffff:127.0.0.2]:4751"),
        "sendto ::ffff:127.0.0.2",
    );
    let a = alert(&agent, "v4-rule", |v| {
        v["event"]["connect"]["datagram"] == true
    });
    assert_eq!(a["event"]["connect"]["remote_addr"], "127.0.0.2", "{a}");
    // Other ports of the same address are untouched.
    connect("[::ffff:127.0.0.2]:4753").expect("the mapped address on an open port");

    // A policy written with the mapped spelling is the IPv4 network.
    assert_eperm(
        connect("127.0.0.3:4752"),
        "AF_INET to a mapped-spelled rule",
    );
    assert_eperm(
        connect("[::ffff:127.0.0.3]:4752"),
        "AF_INET6 to a mapped-spelled rule",
    );
    let a = alert(&agent, "mapped-spelling", |_| true);
    assert_eq!(a["event"]["connect"]["remote_addr"], "127.0.0.3", "{a}");
}

#[test]
fn datagrams_without_connect_are_refused_and_each_flow_reported_once_a_second() {
    require_root();
    let scratch = Scratch::new();
    scratch.policy(
        "udp.yaml",
        r#"name: udp-block
mode: enforce
on: { connect: { direction: [outbound], remote: ["127.0.0.4/32"], ports: [4754], protocol: [udp] } }
do: [block, alert]
"#,
    );
    let receiver = UdpSocket::bind("127.0.0.4:4754").expect("receiver");
    let open = UdpSocket::bind("127.0.0.4:4755").expect("open receiver");
    for socket in [&receiver, &open] {
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    let agent = scratch.start();

    let sender = UdpSocket::bind("127.0.0.1:0").expect("sender");
    let started = Instant::now();
    for i in 0..1000 {
        assert_eperm(
            sender.send_to(b"leak", "127.0.0.4:4754"),
            &format!("datagram {i}"),
        );
    }
    let took = started.elapsed();
    let mut buf = [0u8; 16];
    assert!(receiver.recv(&mut buf).is_err(), "no datagram got through");

    let seen = alerts(&agent, "udp-block", Duration::from_secs(2), |_| true);
    assert!(!seen.is_empty(), "the refused flow is reported");
    let limit = 2 + took.as_secs() as usize;
    assert!(
        seen.len() <= limit,
        "{} alerts for 1000 datagrams in {took:?}",
        seen.len()
    );
    for a in &seen {
        let c = &a["event"]["connect"];
        assert_eq!(c["blocked"], true, "{a}");
        assert_eq!(c["datagram"], true, "{a}");
        assert_eq!(c["protocol"], "udp", "{a}");
        assert_eq!(c["remote_addr"], "127.0.0.4", "{a}");
        assert_eq!(a["results"][0]["ok"], true, "{a}");
    }
    // A second later the flow is reported again, with what went unreported.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eperm(sender.send_to(b"leak", "127.0.0.4:4754"), "datagram 1001");
    let a = alert(&agent, "udp-block", |_| true);
    let reported = seen.len() as u64 + 1;
    let suppressed: u64 = seen
        .iter()
        .chain([&a])
        .map(|a| a["event"]["connect"]["suppressed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        reported + suppressed,
        1001,
        "every datagram is reported or counted"
    );

    // sendmsg from an AF_INET6 socket to the IPv4-mapped address.
    let v6 = sockets::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0).expect("v6 socket");
    assert_eperm(
        sockets::sendmsg(&v6, b"leak", addr("[::ffff:127.0.0.4]:4754")),
        "sendmsg to ::ffff:127.0.0.4",
    );
    // sendmmsg: the open destination goes, the blocked one stops the batch.
    let v4 = sockets::socket(libc::AF_INET, libc::SOCK_DGRAM, 0).expect("v4 socket");
    let batch = [
        addr("127.0.0.4:4755"),
        addr("127.0.0.4:4754"),
        addr("127.0.0.4:4755"),
    ];
    assert_eq!(sockets::sendmmsg(&v4, b"ok", &batch).expect("sendmmsg"), 1);
    assert_eperm(
        sockets::sendmmsg(&v4, b"leak", &batch[1..]),
        "sendmmsg to the blocked address first",
    );
    assert!(
        open.recv(&mut buf).is_ok(),
        "the open destination got its datagram"
    );
    // The unspecified address from a socket bound to the blocked one.
    let bound = UdpSocket::bind("127.0.0.4:0").expect("socket on 127.0.0.4");
    assert_eperm(
        bound.send_to(b"leak", "0.0.0.0:4754"),
        "sendto 0.0.0.0 from 127.0.0.4",
    );
    // A UDP socket connected to an open address, sending elsewhere.
    let connected = UdpSocket::bind("127.0.0.1:0").expect("socket");
    connected
        .connect("127.0.0.4:4755")
        .expect("connect to the open port");
    assert_eperm(
        connected.send_to(b"leak", "127.0.0.4:4754"),
        "sendto past a connected peer",
    );
    // UDP-Lite goes through the UDP code, and is UDP for the policy.
    match sockets::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDPLITE) {
        Ok(lite) => assert_eperm(
            sockets::sendto(&lite, b"leak", 0, addr("127.0.0.4:4754")),
            "UDP-Lite sendto",
        ),
        Err(e) => eprintln!("UDP-Lite not available here ({e}); skipped"),
    }
    assert!(
        receiver.recv(&mut buf).is_err(),
        "still no datagram got through"
    );
}

#[test]
fn every_overlapping_policy_holds() {
    require_root();
    let scratch = Scratch::new();
    let rule = |name: &str, remote: &str, except: &str, port: u16| {
        format!(
            "name: {name}\nmode: enforce\non: {{ connect: {{ direction: [outbound], remote: [\"{remote}\"], except: [{except}], ports: [{port}], protocol: [tcp] }} }}\ndo: [block, alert]\n---\n"
        )
    };
    scratch.policy(
        "overlap.yaml",
        &[
            rule("a", "127.0.0.0/8", "\"127.0.0.8/29\"", 4761),
            rule("b", "127.0.0.9/32", "", 4762),
            rule("c", "127.0.0.0/8", "", 4763),
            rule("d", "127.0.0.0/8", "\"127.0.0.32/27\"", 4764),
            rule("e", "127.0.0.32/27", "", 4764),
        ]
        .concat(),
    );
    let _listeners: Vec<TcpListener> = [
        "127.0.0.9:4761",
        "127.0.0.9:4762",
        "127.0.0.3:4761",
        "127.0.0.9:4763",
        "127.0.0.33:4764",
        "127.0.0.3:4764",
    ]
    .into_iter()
    .map(|a| TcpListener::bind(a).unwrap_or_else(|e| panic!("listen on {a}: {e}")))
    .collect();
    let agent = scratch.start();
    // b inside a's except; a holds outside it.
    assert_eperm(connect("127.0.0.9:4762"), "b inside a's except");
    let a = alert(&agent, "b", |_| true);
    assert_eq!(a["event"]["connect"]["remote_addr"], "127.0.0.9");
    connect("127.0.0.9:4761").expect("a's except lets 127.0.0.9:4761 through");
    assert_eperm(connect("127.0.0.3:4761"), "a outside its except");
    alert(&agent, "a", |v| {
        v["event"]["connect"]["remote_addr"] == "127.0.0.3"
    });
    // b's narrower prefix does not hide c's broader one.
    assert_eperm(connect("127.0.0.9:4763"), "c under b's /32");
    alert(&agent, "c", |v| {
        v["event"]["connect"]["remote_addr"] == "127.0.0.9"
    });
    // d's except at e's very prefix opens no hole in e.
    assert_eperm(connect("127.0.0.33:4764"), "e at d's except");
    alert(&agent, "e", |v| {
        v["event"]["connect"]["remote_addr"] == "127.0.0.33"
    });
    assert_eperm(connect("127.0.0.3:4764"), "d outside its except");
    assert_eperm(connect("[::ffff:127.0.0.9]:4762"), "b, IPv4-mapped");
}

#[test]
fn bind_unspecified_fast_open_and_mptcp_meet_the_same_rule() {
    require_root();
    let scratch = Scratch::new();
    scratch.policy(
        "tcp.yaml",
        r#"name: tcp-block
mode: enforce
on: { connect: { direction: [outbound], remote: ["127.0.0.5/32", "127.0.0.1/32", "::1/128"], ports: [4771], protocol: [tcp] } }
do: [block, alert]
"#,
    );
    let listeners: Vec<TcpListener> = ["127.0.0.5:4771", "127.0.0.1:4771", "[::1]:4771"]
        .into_iter()
        .map(|a| {
            let l = TcpListener::bind(a).unwrap_or_else(|e| panic!("listen on {a}: {e}"));
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let agent = scratch.start();
    let to = addr("127.0.0.5:4771");
    let tcp = || sockets::socket(libc::AF_INET, libc::SOCK_STREAM, 0).expect("TCP socket");
    let tcp6 = || sockets::socket(libc::AF_INET6, libc::SOCK_STREAM, 0).expect("TCP6 socket");

    // connect after bind, to a fixed local address.
    let bound = tcp();
    sockets::bind(&bound, addr("127.0.0.1:0")).expect("bind");
    assert_eperm(sockets::connect(&bound, to), "connect after bind");
    // The unspecified address reaches the socket's own address, or loopback.
    let bound = tcp();
    sockets::bind(&bound, addr("127.0.0.5:0")).expect("bind 127.0.0.5");
    assert_eperm(
        sockets::connect(&bound, addr("0.0.0.0:4771")),
        "0.0.0.0 from 127.0.0.5",
    );
    let a = alert(&agent, "tcp-block", |v| {
        v["event"]["connect"]["remote_addr"] == "127.0.0.5"
    });
    assert_eq!(a["event"]["connect"]["blocked"], true);
    assert_eperm(
        sockets::connect(&tcp(), addr("0.0.0.0:4771")),
        "0.0.0.0 unbound",
    );
    alert(&agent, "tcp-block", |v| {
        v["event"]["connect"]["remote_addr"] == "127.0.0.1"
    });
    assert_eperm(sockets::connect(&tcp6(), addr("[::]:4771")), "::");
    alert(&agent, "tcp-block", |v| {
        v["event"]["connect"]["remote_addr"] == "::1"
    });
    let mapped = tcp6();
    sockets::bind(&mapped, addr("[::ffff:127.0.0.5]:0")).expect("bind ::ffff:127.0.0.5");
    assert_eperm(
        sockets::connect(&mapped, addr("[::ffff:0.0.0.0]:4771")),
        "::ffff:0.0.0.0",
    );
    // TCP fast open: data with the SYN, sent by sendto(MSG_FASTOPEN).
    assert_eperm(
        sockets::sendto(&tcp(), b"leak", libc::MSG_FASTOPEN, to),
        "TCP fast open",
    );
    assert_eperm(
        sockets::sendto(
            &tcp6(),
            b"leak",
            libc::MSG_FASTOPEN,
            addr("[::ffff:127.0.0.5]:4771"),
        ),
        "TCP fast open, IPv4-mapped",
    );
    // MPTCP falls back to TCP with any peer; a tcp rule must hold it.
    match sockets::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP) {
        Ok(mptcp) => assert_eperm(sockets::connect(&mptcp, to), "MPTCP connect"),
        Err(e) => eprintln!("MPTCP not available here ({e}); skipped"),
    }
    std::thread::sleep(Duration::from_millis(100));
    for l in &listeners {
        assert!(
            matches!(l.accept(), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "nothing reached {:?}",
            l.local_addr()
        );
    }
}

/// A block set naming more prefixes than the kernel's default room
/// (4 096) is enforced whole: the tries are made from the policy set.
#[test]
fn a_block_set_past_the_default_room_is_enforced_whole() {
    require_root();
    let scratch = Scratch::new();
    let hosts: Vec<String> = (0..6_000u32)
        .map(|i| format!("127.1.{}.{}", i / 256, i % 256))
        .collect();
    let remote: Vec<String> = hosts.iter().map(|h| format!("\"{h}/32\"")).collect();
    scratch.policy(
        "many.yaml",
        &format!(
            "name: many\nmode: enforce\non: {{ connect: {{ direction: [outbound], remote: [{}], ports: [4770], protocol: [tcp] }} }}\ndo: [block]\n",
            remote.join(", ")
        ),
    );
    let _open = TcpListener::bind("127.2.0.1:4770").expect("listen on 127.2.0.1:4770");
    let _agent = scratch.start();
    for host in &hosts {
        assert_eperm(connect(&format!("{host}:4770")), host);
    }
    connect("127.2.0.1:4770").expect("an address the set does not name connects");
}
