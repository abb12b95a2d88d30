//! Only what loaded policies could match leaves the kernel, and one family
//! cannot starve another (issue 14): a UDP `connect()` flood by an
//! unprivileged user sends nothing to the agent when no connect policy is
//! loaded, while every change of a watched file is still put back; with a
//! connect policy only connects it could match are sent; blocking refuses
//! whatever the filter says. Loopback only; every process, file and socket
//! here is the test's own.
use std::{
    fs,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use reflex_tests::{
    ChildGuard, Scratch, eventually, holds, metrics_addr, programs, require_root, scrape,
};

const WAIT: Duration = Duration::from_secs(10);
/// Bounds the flood: it is stopped long before, once the test is done.
const FLOOD_MAX: u64 = 200_000_000;
/// Connects the flood makes before the file is touched.
const FLOOD_BEFORE: u64 = 200_000;
/// Changes of the watched file made during the flood.
const CHANGES: usize = 200;

/// `flood N PORT MARKER K`: N `connect()` calls on one UDP socket to
/// 127.0.0.1, ports PORT to PORT+63 in turn, as fast as one core allows;
/// creates MARKER after the first K.
const FLOOD_PROGRAM: &str = r#"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    long n = atol(argv[1]);
    int port = atoi(argv[2]);
    long k = atol(argv[4]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) return 3;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7f000001);
    for (long i = 0; i < n; i++) {
        a.sin_port = htons(port + (i & 63));
        connect(fd, (struct sockaddr *)&a, sizeof a);
        if (i + 1 == k) close(creat(argv[3], 0644));
    }
    return 0;
}
"#;

/// Series of `/metrics` the tests read, summed over the given labels.
fn sum(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape(addr).sum(name, labels)
}

fn filtered(addr: SocketAddr) -> f64 {
    sum(
        addr,
        "reflex_kernel_filtered_total",
        &[("family", "connect")],
    )
}

fn connect_events(addr: SocketAddr) -> f64 {
    sum(addr, "reflex_events_total", &[("family", "connect")])
}

/// The flood program, compiled into the scratch area and runnable by `nobody`.
fn flood_program(scratch: &Scratch) -> PathBuf {
    fs::set_permissions(scratch.path(""), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = scratch.path("bin");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    programs::compile(&bin, "flood", FLOOD_PROGRAM)
}

/// Starts the flood as `nobody`, with no groups; it creates `marker` (in a
/// directory `nobody` may write) after [`FLOOD_BEFORE`] connects.
fn start_flood(program: &Path, port: u16, marker: &Path) -> ChildGuard {
    ChildGuard::spawn(
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(program)
            .arg(FLOOD_MAX.to_string())
            .arg(port.to_string())
            .arg(marker)
            .arg(FLOOD_BEFORE.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// A watched file `etc/app.conf` ("port=80") under an enforcing revert policy.
fn watched_file(scratch: &Scratch) -> PathBuf {
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    let file = etc.join("app.conf");
    fs::write(&file, "port=80\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    scratch.policy(
        "managed.yaml",
        &format!(
            "name: managed\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [revert, alert]\n",
            file.display()
        ),
    );
    file
}

#[test]
fn a_udp_connect_flood_stays_in_the_kernel_and_file_changes_are_all_reverted() {
    require_root();
    let scratch = Scratch::new();
    let program = flood_program(&scratch);
    let file = watched_file(&scratch);
    let agent = scratch.start();
    let addr = metrics_addr(&agent);
    let lost_before = sum(
        addr,
        "reflex_events_lost_total",
        &[("place", "kernel"), ("family", "file")],
    );
    let filtered_before = filtered(addr);
    let connects_before = connect_events(addr);

    let marks = scratch.path("marks");
    fs::create_dir(&marks).unwrap();
    fs::set_permissions(&marks, fs::Permissions::from_mode(0o777)).unwrap();
    let marker = marks.join("flooding");
    let mut flood = start_flood(&program, 20_000, &marker);
    assert!(
        eventually(Duration::from_secs(60), || marker.exists()),
        "the flood made {FLOOD_BEFORE} connects"
    );
    for i in 0..CHANGES {
        fs::write(&file, format!("port={i}\nbackdoor=1\n")).unwrap();
        assert!(
            holds(&file, "port=80\n", WAIT),
            "change {i} of {CHANGES} was put back during the flood"
        );
    }
    assert!(
        flood.wait_for(Duration::ZERO).is_none(),
        "the flood still ran while the file was changed"
    );
    drop(flood);

    let matches = sum(
        addr,
        "reflex_policy_matches_total",
        &[("policy", "managed")],
    );
    assert!(
        matches >= CHANGES as f64,
        "every change alerted: {matches} decisions for {CHANGES} changes"
    );
    // No connect policy: no connect record reached the agent, from the
    // flood or anyone else on the host.
    assert_eq!(
        connect_events(addr) - connects_before,
        0.0,
        "connect records sent"
    );
    assert_eq!(
        sum(
            addr,
            "reflex_events_lost_total",
            &[("place", "kernel"), ("family", "file")],
        ) - lost_before,
        0.0,
        "file events lost in the kernel"
    );
    assert!(
        filtered(addr) - filtered_before >= FLOOD_BEFORE as f64,
        "the flood's connects are counted in the kernel (filtered: {})",
        filtered(addr) - filtered_before
    );
    assert_eq!(
        sum(
            addr,
            "reflex_kernel_filter_active",
            &[("family", "connect")]
        ),
        1.0
    );
}

#[test]
fn with_a_connect_policy_only_connects_it_could_match_are_sent() {
    require_root();
    let scratch = Scratch::new();
    scratch.policy(
        "dns.yaml",
        "name: odd-dns\nmode: monitor\non:\n  connect: { direction: [outbound], remote: [\"127.0.0.9/32\"], ports: [5353], protocol: [udp] }\ndo: [alert]\n",
    );
    let agent = scratch.start();
    let addr = metrics_addr(&agent);
    let before = filtered(addr);
    let connects_before = connect_events(addr);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Elsewhere: another address, another port, another protocol.
    for i in 0..1000u16 {
        socket.connect(("127.0.0.1", 5353)).unwrap();
        socket.connect(("127.0.0.9", 5354 + i % 8)).unwrap();
    }
    let tcp: SocketAddr = "127.0.0.9:5353".parse().unwrap();
    let _ = std::net::TcpStream::connect_timeout(&tcp, Duration::from_secs(1));
    assert!(
        eventually(WAIT, || filtered(addr) - before >= 2001.0),
        "connects no policy could match are counted (filtered: {})",
        filtered(addr) - before
    );
    socket.connect(("127.0.0.9", 5353)).unwrap();
    let alert = reflex_tests::policy_alert(&agent, WAIT, "odd-dns", |_| true);
    assert_eq!(alert["event"]["connect"]["remote_addr"], "127.0.0.9");
    assert_eq!(alert["event"]["connect"]["remote_port"], 5353);
    assert_eq!(alert["event"]["process"]["pid"], std::process::id());
    // Only the matching connect was sent: nobody else on the host talks
    // to 127.0.0.9:5353 over UDP.
    assert!(eventually(WAIT, || connect_events(addr) - connects_before >= 1.0));
    assert_eq!(
        connect_events(addr) - connects_before,
        1.0,
        "connect records sent"
    );
}

#[test]
fn blocking_refuses_and_reports_with_the_filter_on() {
    require_root();
    let scratch = Scratch::new();
    scratch.policy(
        "block.yaml",
        "name: no-4444\nmode: enforce\non:\n  connect: { direction: [outbound], remote: [\"127.0.0.2/32\"], ports: [4444], protocol: [udp] }\ndo: [block, alert]\n",
    );
    let agent = scratch.start();
    let addr = metrics_addr(&agent);
    let before = filtered(addr);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .connect(("127.0.0.3", 4444))
        .expect("elsewhere is allowed");
    let err = socket
        .connect(("127.0.0.2", 4444))
        .expect_err("the blocked connect is refused");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let alert = reflex_tests::policy_alert(&agent, WAIT, "no-4444", |_| true);
    assert_eq!(alert["event"]["connect"]["blocked"], true);
    assert_eq!(alert["event"]["connect"]["remote_addr"], "127.0.0.2");
    assert!(
        eventually(WAIT, || filtered(addr) > before),
        "the allowed connect elsewhere was filtered"
    );
    // Datagrams sent without connect are refused too.
    let err = socket_unconnected()
        .send_to(b"x", "127.0.0.2:4444")
        .expect_err("the blocked datagram is refused");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
}

fn socket_unconnected() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

#[test]
fn accepts_on_ports_no_inbound_policy_names_stay_in_the_kernel() {
    require_root();
    let scratch = Scratch::new();
    let named = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = named.local_addr().unwrap().port();
    scratch.policy(
        "inbound.yaml",
        &format!(
            "name: inbound-{port}\nmode: monitor\non:\n  connect: {{ direction: [inbound], ports: [{port}], protocol: [tcp] }}\ndo: [alert]\n"
        ),
    );
    let agent = scratch.start();
    let addr = metrics_addr(&agent);
    let before = filtered(addr);
    let connects_before = connect_events(addr);
    const ACCEPTS: usize = 100;
    for _ in 0..ACCEPTS {
        let _client = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        other.accept().unwrap();
    }
    // Each round: an outbound connect (no outbound policy) and an accept
    // on a port the inbound policy does not name.
    assert!(
        eventually(WAIT, || filtered(addr) - before >= 2.0 * ACCEPTS as f64),
        "accepts elsewhere are counted in the kernel (filtered: {})",
        filtered(addr) - before
    );
    let _client = TcpStream::connect(named.local_addr().unwrap()).unwrap();
    let (_accepted, peer) = named.accept().unwrap();
    let alert = reflex_tests::policy_alert(&agent, WAIT, &format!("inbound-{port}"), |_| true);
    assert_eq!(alert["event"]["connect"]["direction"], "inbound");
    assert_eq!(alert["event"]["connect"]["local_port"], port);
    assert_eq!(alert["event"]["connect"]["remote_port"], peer.port());
    // Records of one family keep their order: the accepts elsewhere came
    // before this one, and none of them was sent.
    assert_eq!(
        connect_events(addr) - connects_before,
        1.0,
        "connect records sent"
    );
}

/// An outbound UDP monitor policy on port 5353 of `count` addresses
/// 127.0.3.N, one prefix each.
fn prefixes_policy(count: usize) -> String {
    let remote: Vec<String> = (1..=count).map(|i| format!("\"127.0.3.{i}/32\"")).collect();
    format!(
        "name: many\nmode: monitor\non:\n  connect: {{ direction: [outbound], remote: [{}], ports: [5353], protocol: [udp] }}\ndo: [alert]\n",
        remote.join(", ")
    )
}

#[test]
fn a_set_past_the_filters_room_sends_every_connect_until_one_fits() {
    require_root();
    let scratch = Scratch::new();
    scratch.policy("many.yaml", &prefixes_policy(20));
    let agent = scratch.start_with_config("connect_filter: { max_prefixes: 8 }\n");
    let addr = metrics_addr(&agent);
    let active = || {
        sum(
            addr,
            "reflex_kernel_filter_active",
            &[("family", "connect")],
        )
    };
    assert_eq!(active(), 0.0, "20 prefixes do not fit in 8: no filter");
    assert_eq!(
        sum(addr, "reflex_kernel_filter_capacity", &[("map", "ipv4")]),
        8.0
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let before = connect_events(addr);
    socket.connect(("127.0.0.1", 5354)).unwrap();
    assert!(
        eventually(WAIT, || connect_events(addr) > before),
        "a connect no policy matches is sent while the filter is off"
    );

    scratch.policy("many.yaml", &prefixes_policy(4));
    assert!(
        eventually(WAIT, || active() == 1.0),
        "a set that fits is filtered again"
    );
    assert_eq!(
        sum(addr, "reflex_kernel_filter_entries", &[("map", "ipv4")]),
        4.0
    );
    let before = filtered(addr);
    socket.connect(("127.0.0.1", 5354)).unwrap();
    assert!(
        eventually(WAIT, || filtered(addr) > before),
        "the same connect is counted in the kernel"
    );
}
