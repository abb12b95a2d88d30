//! Running reflex as a service: readiness told to a service manager over
//! `NOTIFY_SOCKET`, the systemd unit's capability set being enough for every
//! action, and `reflex doctor`. Every file and process here is the test's own.
use std::{
    fs,
    net::{TcpListener, TcpStream},
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        net::UnixDatagram,
        process::ExitStatusExt as _,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use reflex_tests::{ChildGuard, Scratch, reflex_bin, require_root, start_agent_with};

const WAIT: Duration = Duration::from_secs(5);

/// The next notification, as its `KEY=VALUE` lines.
fn next_notification(socket: &UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification arrives");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn readiness_reloads_and_stopping_are_told_to_the_service_manager() {
    require_root();
    let scratch = Scratch::new();
    scratch.policy(
        "exec.yaml",
        "name: seen\nmode: monitor\non:\n  exec: { paths: [\"/nonexistent/tool\"] }\ndo: [alert]\n",
    );
    let path = scratch.path("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket.set_read_timeout(Some(WAIT)).unwrap();

    let mut command = scratch.run_command(&reflex_bin());
    command.env("NOTIFY_SOCKET", &path);
    let mut agent = start_agent_with(&mut command, "reflex running");
    let ready = next_notification(&socket);
    assert!(ready.contains(&"READY=1".to_string()), "{ready:?}");
    assert!(
        ready.contains(&"STATUS=1 policies in force".to_string()),
        "{ready:?}"
    );
    // The agent said it runs before it told the manager: probes attached.
    assert!(agent.log_line(Duration::ZERO, "attached").is_some());

    agent.guard.signal(Signal::SIGHUP);
    let reloading = next_notification(&socket);
    assert!(
        reloading.contains(&"RELOADING=1".to_string()),
        "{reloading:?}"
    );
    assert!(
        reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "systemd 253+ needs the reload's start time: {reloading:?}"
    );
    let ready = next_notification(&socket);
    assert!(ready.contains(&"READY=1".to_string()), "{ready:?}");

    agent.guard.signal(Signal::SIGTERM);
    let stopping = next_notification(&socket);
    assert!(stopping.contains(&"STOPPING=1".to_string()), "{stopping:?}");
    let status = agent.guard.wait_for(WAIT).expect("the agent exits");
    assert!(status.success(), "{status:?}");
}

/// The unit's `CapabilityBoundingSet=` as a setpriv `--bounding-set` value.
fn unit_capabilities() -> String {
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/packaging/debian/reflex.service");
    let text = fs::read_to_string(&unit).expect("the unit file");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    let caps: Vec<String> = line
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    assert!(!caps.is_empty());
    format!("-all,{}", caps.join(","))
}

/// nobody:nogroup, who owns what the agent must act on here.
const NOBODY: u32 = 65534;

#[test]
fn the_units_capabilities_are_enough_to_revert_kill_and_block() {
    require_root();
    let scratch = Scratch::new();
    // A managed file of another user that root without DAC_OVERRIDE could
    // not read, and whose owner a restore must set back.
    let managed = scratch.path("managed");
    fs::create_dir(&managed).unwrap();
    let file = managed.join("private.conf");
    fs::write(&file, "good\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(&file, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    let tool = scratch.tool("nobodys-tool", "/bin/sleep");
    scratch.policy(
        "all.yaml",
        &format!(
            "name: keep\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo: [revert]\n---\nname: stop\nmode: enforce\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [kill]\n---\nname: wall\nmode: enforce\non:\n  connect: {{ direction: [outbound], remote: [\"127.0.0.2/32\"], ports: [4446] }}\ndo: [block]\n",
            file.display(),
            tool.display()
        ),
    );
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--bounding-set={}", unit_capabilities()))
        .arg("--inh-caps=-all")
        .arg("--");
    let inner = scratch.run_command(&reflex_bin());
    command.arg(inner.get_program()).args(inner.get_args());
    let agent = start_agent_with(&mut command, "reflex running");

    // Revert, with owner and mode.
    fs::write(&file, "bad\n").unwrap();
    let deadline = Instant::now() + WAIT;
    let restored = loop {
        let ok = fs::metadata(&file)
            .is_ok_and(|m| m.uid() == NOBODY && m.gid() == NOBODY && m.mode() & 0o7777 == 0o600)
            && fs::read(&file).is_ok_and(|c| c == b"good\n");
        if ok || Instant::now() >= deadline {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(restored, "the file of another user is put back");

    // Kill another user's process.
    let mut victim = ChildGuard::spawn(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&tool)
            .arg("30")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let status = victim.wait_for(WAIT).expect("the tool is killed");
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));

    // Block.
    let listener = TcpListener::bind("127.0.0.2:4446").expect("listen on 127.0.0.2");
    let err = TcpStream::connect_timeout(&listener.local_addr().unwrap(), WAIT)
        .expect_err("the connect is blocked");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    drop(agent);
}

fn doctor(scratch: &Scratch) -> (bool, String) {
    let config = scratch.path("reflex.yaml");
    fs::write(&config, "").unwrap();
    let out = Command::new(reflex_bin())
        .arg("doctor")
        .arg("--config")
        .arg(&config)
        .arg("--policies")
        .arg(scratch.path("policies"))
        .output()
        .expect("run reflex doctor");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn doctor_reports_the_kernel_the_probes_and_the_policies() {
    require_root();
    let scratch = Scratch::new();
    scratch.policy(
        "ok.yaml",
        "name: fine\nmode: monitor\non:\n  exec: { paths: [\"/usr/bin/nc*\"] }\ndo: [alert]\n",
    );
    let (ok, report) = doctor(&scratch);
    assert!(ok, "{report}");
    for expected in [
        "ok    BTF",
        "ok    map type ringbuf",
        "ok    program type raw_tracepoint",
        "ok    raw_tracepoint/sys_enter",
        "ok    tracepoint/sched/sched_process_exec",
        "ok    cgroup/connect4@",
        "ok    cgroup/sendmsg4@",
        "ok    cgroup/sendmsg6@",
        "ok    file: io_uring writes",
        "ok    file: directory swapped or exchanged",
        "ok    connect: IPv4-mapped, datagrams",
        "open  file: shared mapping, writer lives on",
        "fine",
        "1 policies would load",
    ] {
        assert!(report.contains(expected), "{expected:?} missing:\n{report}");
    }
    assert!(
        report.contains("program type lsm") && report.contains("program type fentry"),
        "{report}"
    );

    scratch.policy(
        "bad.yaml",
        "name: broken\nmode: enforce\non:\n  exec: { paths: [\"bin/nc\"] }\ndo: [alert]\n",
    );
    let (ok, report) = doctor(&scratch);
    assert!(!ok, "{report}");
    let bad: PathBuf = scratch.path("policies/bad.yaml");
    assert!(
        report.contains(&format!("{}:4:19:", bad.display())),
        "{report}"
    );
}
