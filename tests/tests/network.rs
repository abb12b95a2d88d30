//! The connect sensor and block end to end (seed case S3), on loopback
//! only: every listener and connection here is the test's own.
use std::{
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use nix::sys::signal::Signal;
use reflex_tests::{Agent, Scratch, require_root};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);
const EPERM: i32 = 1;

fn alert(agent: &Agent, policy: &str, found: impl Fn(&Value) -> bool) -> Value {
    reflex_tests::policy_alert(agent, WAIT, policy, found)
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = addr.parse().expect("address");
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
}

#[test]
fn connections_are_seen_and_blocked_in_the_kernel_while_the_agent_runs() {
    require_root();
    let scratch = Scratch::new();
    scratch.policy(
        "net.yaml",
        r#"name: block-v4
mode: enforce
on:
  connect: { direction: [outbound], remote: ["127.0.0.2/32"], ports: [4444], protocol: [tcp] }
do: [block, alert]
---
name: block-v6
mode: enforce
on:
  connect: { direction: [outbound], remote: ["::1/128"], ports: [4445] }
do: [block, alert]
---
name: see-udp
mode: enforce
on:
  connect: { direction: [outbound], protocol: [udp], remote: ["127.0.0.4"] }
do: [alert]
---
name: see-inbound
mode: enforce
on:
  connect: { direction: [inbound], ports: [4444] }
do: [alert]
---
name: see-listen
mode: enforce
on:
  connect: { direction: [listen], ports: ["4446"] }
do: [alert]
"#,
    );
    let me = std::process::id();
    let blocked_listener = TcpListener::bind("127.0.0.2:4444").expect("listen on 127.0.0.2");
    let open_listener = TcpListener::bind("127.0.0.3:4444").expect("listen on 127.0.0.3");
    let v6_blocked = TcpListener::bind((Ipv6Addr::LOCALHOST, 4445)).expect("listen on ::1:4445");
    let mut agent = scratch.start();
    let v6_open = TcpListener::bind((Ipv6Addr::LOCALHOST, 4446)).expect("listen on ::1:4446");
    let a = alert(&agent, "see-listen", |_| true);
    assert_eq!(a["event"]["connect"]["direction"], "listen");
    assert_eq!(a["event"]["connect"]["local_port"], 4446);
    assert_eq!(a["event"]["connect"]["local_addr"], "::1");
    assert_eq!(a["event"]["process"]["pid"], me);

    // IPv4: the rule refuses 127.0.0.2:4444 and nothing else.
    let err = connect("127.0.0.2:4444").expect_err("blocked connect fails");
    assert_eq!(err.raw_os_error(), Some(EPERM), "{err}");
    let a = alert(&agent, "block-v4", |v| {
        v["event"]["connect"]["remote_addr"] == "127.0.0.2"
    });
    assert_eq!(a["event"]["connect"]["blocked"], true);
    assert_eq!(a["event"]["process"]["pid"], me);
    assert_eq!(a["results"][0]["ok"], true);
    let stream = connect("127.0.0.3:4444").expect("127.0.0.3:4444 connects");
    let (accepted, peer) = open_listener.accept().expect("accept");
    let a = alert(&agent, "see-inbound", |v| {
        v["event"]["connect"]["remote_port"] == peer.port()
    });
    assert_eq!(a["event"]["process"]["pid"], me, "the accepting process");
    assert_eq!(a["event"]["connect"]["local_addr"], "127.0.0.3");
    assert_eq!(a["event"]["connect"]["local_port"], 4444);
    assert_eq!(a["event"]["connect"]["remote_addr"], "127.0.0.1");
    drop((stream, accepted));

    // IPv6 on ::1.
    let err = connect("[::1]:4445").expect_err("blocked v6 connect fails");
    assert_eq!(err.raw_os_error(), Some(EPERM), "{err}");
    alert(&agent, "block-v6", |v| {
        v["event"]["connect"]["remote_addr"] == "::1"
    });
    connect("[::1]:4446").expect("[::1]:4446 connects");

    // UDP connect.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    udp.connect("127.0.0.4:5555").expect("udp connect");
    let a = alert(&agent, "see-udp", |_| true);
    assert_eq!(a["event"]["connect"]["protocol"], "udp");
    assert_eq!(a["event"]["connect"]["remote_port"], 5555);

    // The block lives only as long as the agent.
    agent.guard.signal(Signal::SIGKILL);
    agent.guard.wait_for(WAIT).expect("the agent dies");
    connect("127.0.0.2:4444").expect("connects once the agent is gone");
    drop((blocked_listener, v6_blocked, v6_open));
}

#[test]
fn monitor_mode_lets_the_connection_through_and_says_it_would_block() {
    require_root();
    let scratch = Scratch::new();
    scratch.policy(
        "net.yaml",
        "name: watch-4447\nmode: monitor\non:\n  connect: { direction: [outbound], remote: [\"127.0.0.5\"], ports: [4447] }\ndo: [block, alert]\n",
    );
    let listener = TcpListener::bind("127.0.0.5:4447").expect("listen");
    let agent = scratch.start();
    let stream = connect("127.0.0.5:4447");
    assert!(stream.is_ok(), "monitor mode blocks nothing: {stream:?}");
    let a = alert(&agent, "watch-4447", |_| true);
    assert_eq!(a["would"], serde_json::json!(["block"]));
    assert_eq!(a["event"]["connect"]["blocked"], false);
    drop(listener);
}
