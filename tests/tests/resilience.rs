//! What outsiders can do to the agent's own endpoint must not switch off
//! enforcement (issue #14): 2 000 idle connections to `/metrics`, and its
//! port taken before the agent starts. A watched file is reverted through
//! both. Every file, port and process here is the test's own; loopback only.
use std::{
    fs,
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use reflex_tests::{
    Agent, Scratch, eventually, http_get, metric, metrics_addr, reflex_bin, require_root,
    start_agent_with,
};

const WAIT: Duration = Duration::from_secs(20);

/// Idle connections the test opens.
const IDLE: usize = 2000;

/// A managed file and a policy that reverts it.
fn managed(scratch: &Scratch) -> std::path::PathBuf {
    let dir = scratch.path("managed");
    fs::create_dir(&dir).unwrap();
    let file = dir.join("app.conf");
    fs::write(&file, "good\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    scratch.policy(
        "keep.yaml",
        &format!(
            "name: keep\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [revert, alert]\n",
            file.display()
        ),
    );
    file
}

/// Changes `file` and waits until the agent put it back.
fn reverted(file: &Path) -> bool {
    fs::write(file, "bad\n").unwrap();
    eventually(WAIT, || fs::read(file).is_ok_and(|c| c == b"good\n"))
}

/// Whether the agent closed `stream` (end of stream or a reset).
fn closed_by_peer(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this test's own soft descriptor limit to its hard limit.
fn raise_own_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        },
    )
    .expect("raising the test's descriptor limit");
}

#[test]
fn two_thousand_idle_metrics_connections_do_not_stop_a_revert() {
    require_root();
    raise_own_limit();
    let scratch = Scratch::new();
    let file = managed(&scratch);
    // A hard limit of 1024 descriptors: without the connection cap, 2 000
    // connections would take every one the agent has.
    let config = scratch.config("metrics: { header_timeout: 120s, idle_timeout: 120s }\n");
    let mut command = Command::new("prlimit");
    command.arg("--nofile=1024:1024").arg("--");
    let inner = scratch.run_command(&reflex_bin());
    command
        .arg(inner.get_program())
        .args(inner.get_args())
        .arg("--config")
        .arg(&config);
    let agent = start_agent_with(&mut command, "reflex running");
    let addr = metrics_addr(&agent);
    let pid = agent.guard.pid();
    // 64 by default; less if the agent's other descriptors leave less.
    let cap: usize = agent
        .log_line(WAIT, "metrics at http://")
        .and_then(|l| {
            l.split("max_connections=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("the agent logs its connection cap");
    assert!(cap >= 1);
    let before = open_fds(pid);

    let mut held = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        held.push(TcpStream::connect_timeout(&addr, WAIT).expect("the kernel completes each"));
    }
    // Past the cap the agent closes them at once; it never holds more.
    let closed = || held.iter().filter(|s| closed_by_peer(s)).count();
    let all_seen = eventually(WAIT, || closed() >= IDLE - cap);
    assert!(all_seen, "the agent closed {} of {IDLE}", closed());
    assert_eq!(closed(), IDLE - cap, "it holds exactly its cap");
    let open = open_fds(pid);
    assert!(
        open <= before + cap + 8,
        "{open} descriptors, {before} before"
    );
    assert!(
        reverted(&file),
        "the revert happened with {IDLE} connections open"
    );
    assert!(open_fds(pid) <= before + cap + 8);

    drop(held);
    let answered = eventually(WAIT, || {
        metric(
            addr,
            "reflex_metrics_connections_dropped_total{reason=\"limit\"}",
        ) > 1000.0
    });
    assert!(
        answered,
        "/metrics answers again and counted the refused connections"
    );
    assert!(reverted(&file), "and reverts go on");
}

/// The next `STATUS=` told to the service manager on `socket`.
fn next_status(socket: &UnixDatagram) -> Option<String> {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if let Some(status) = text.lines().find_map(|l| l.strip_prefix("STATUS=")) {
            return Some(status.to_string());
        }
    }
    None
}

#[test]
fn a_squatted_metrics_port_is_reported_and_retried_while_enforcement_runs() {
    require_root();
    let scratch = Scratch::new();
    let file = managed(&scratch);
    // The squatter takes a port the kernel picks, so no other test's
    // connection can take it between choosing and binding.
    let squatter = TcpListener::bind("127.0.0.1:0").expect("take a port first");
    let addr: SocketAddr = squatter.local_addr().unwrap();
    let notify = scratch.path("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();

    let mut command = scratch.run_command_on(&reflex_bin(), &addr.to_string());
    command.env("NOTIFY_SOCKET", &notify);
    let agent: Agent = start_agent_with(&mut command, "reflex running");
    assert!(agent.log_line(WAIT, "component failing").is_some());
    let mut down = None;
    while let Some(status) = next_status(&socket) {
        if status.contains("down: metrics") {
            down = Some(status);
            break;
        }
    }
    let down = down.expect("STATUS names the metrics endpoint as down");
    assert!(down.contains("Address already in use"), "{down}");
    assert!(reverted(&file), "enforcement runs without /metrics");

    drop(squatter);
    let bound = agent.log_line(WAIT, &format!("metrics at http://{addr}/metrics"));
    assert!(bound.is_some(), "bound again within the backoff");
    let body = http_get(addr, "/metrics");
    assert!(
        body.contains("reflex_component_up{component=\"metrics\"} 1"),
        "{body}"
    );
    // Statuses sent while it was down may still be queued.
    let mut up = None;
    while let Some(status) = next_status(&socket) {
        if !status.contains("down:") {
            up = Some(status);
            break;
        }
    }
    assert_eq!(up.as_deref(), Some("1 policies in force"));
}
