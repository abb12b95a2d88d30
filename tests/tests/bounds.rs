//! Bounded under abuse (issue #14), against the real agent: a 45 × 128 KiB
//! command line, an alert log driven past its size bound, a spool whose
//! sink never answers, an open state directory, a readable configuration
//! holding a token, a hook that leaves a grandchild behind. Every file,
//! port and process here is the test's own; servers listen on loopback.
use std::{
    fs,
    io::Read as _,
    net::TcpListener,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;
use reflex_tests::{
    Agent, ChildGuard, Leftover, Scratch, eventually, free_port, metric, metrics_addr, reflex_bin,
    require_root, running, start_agent_with,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// The agent's default bound on one alert line, newline included.
const MAX_LINE: usize = 16 << 10;

/// Connects each abusive process makes.
const CONNECTS: usize = 200;

/// Perl that waits for `$REFLEX_GO` to exist, then connects to
/// 127.0.0.1:`$REFLEX_PORT` `$REFLEX_CONNECTS` times.
const CONNECTOR: &str = r#"use IO::Socket::INET; my $n = 0; until (-e $ENV{REFLEX_GO}) { select(undef, undef, undef, 0.02); exit 3 if ++$n > 6000 } for (1 .. $ENV{REFLEX_CONNECTS}) { IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $ENV{REFLEX_PORT}, Proto => "tcp") }"#;

/// Starts `perl` re-executing itself as `perl -e CONNECTOR` followed by 45
/// arguments of 128 KiB (the kernel's limit for one), under a stack limit
/// large enough for that.
fn big_argv_process(perl: &Path, go: &Path, port: u16) -> ChildGuard {
    let exec = r#"exec { $^X } $^X, "-e", $ENV{REFLEX_CODE}, map { "x" x 131071 } 1 .. 45 or die "exec: $!""#;
    ChildGuard::spawn(
        Command::new("prlimit")
            .arg("--stack=268435456")
            .arg("--")
            .arg(perl)
            .args(["-e", exec])
            .env("REFLEX_CODE", CONNECTOR)
            .env("REFLEX_GO", go)
            .env("REFLEX_PORT", port.to_string())
            .env("REFLEX_CONNECTS", CONNECTS.to_string())
            .stdout(Stdio::null()),
    )
}

/// Whether `pid` runs with a command line longer than 1 MiB.
fn has_big_argv(pid: u32) -> bool {
    let mut head = Vec::new();
    fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| f.take(8192).read_to_end(&mut head))
        .is_ok()
        && head.windows(4096).any(|w| w.iter().all(|&b| b == b'x'))
}

/// Stdout alert lines until `count` of `policy` arrived or `WAIT` passed
/// without a line; every alert line seen is returned.
fn alerts_until(agent: &Agent, policy: &str, count: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut seen = 0;
    while seen < count {
        let Some(line) = agent.stdout_line(WAIT, |_| true) else {
            break;
        };
        let alert: Value = serde_json::from_str(&line).unwrap_or_default();
        seen += usize::from(alert["policy"] == policy);
        lines.push(line);
    }
    lines
}

fn state_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_huge_command_line_costs_a_kilobyte_per_alert_and_the_spool_stays_bounded() {
    require_root();
    let scratch = Scratch::new();
    let perl = scratch.tool("big-argv", "/usr/bin/perl");
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || server.incoming().take(2 * CONNECTS).for_each(drop));
    scratch.policy(
        "big.yaml",
        &format!(
            "name: big-exec\nmode: monitor\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [alert]\n---\nname: big-connect\nmode: monitor\non:\n  connect: {{ direction: [outbound], remote: [\"127.0.0.1/32\"], ports: [{port}] }}\ndo: [alert]\n",
            perl.display()
        ),
    );
    let go = scratch.path("go");
    // One started before the agent (seeded from /proc), one after (exec event).
    let _seeded = big_argv_process(&perl, &go, port);
    let seeded_pid = _seeded.pid();
    assert!(
        eventually(WAIT, || has_big_argv(seeded_pid)),
        "the process did not take its 5.6 MiB command line"
    );
    let dead_sink = free_port();
    let agent = scratch.start_with_config(&format!(
        "alerts:\n  spool_max_bytes: 64KiB\n  webhooks:\n    - {{ name: dead, url: 'http://127.0.0.1:{dead_sink}/x' }}\n"
    ));
    let _execed = big_argv_process(&perl, &go, port);
    let execed_pid = _execed.pid();
    assert!(eventually(WAIT, || has_big_argv(execed_pid)));
    fs::write(&go, "").unwrap();

    let lines = alerts_until(&agent, "big-connect", 2 * CONNECTS);
    let of = |policy: &str| {
        lines
            .iter()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["policy"] == policy))
            .count()
    };
    assert_eq!(of("big-connect"), 2 * CONNECTS, "every connect alerted");
    assert!(
        lines.iter().any(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["policy"] == "big-exec" && v["event"]["exec"]["argv_truncated"] == true
            })
        }),
        "the exec with the huge command line alerted"
    );
    for line in &lines {
        assert!(
            line.len() < MAX_LINE,
            "an alert line of {} bytes",
            line.len()
        );
        let alert: Value = serde_json::from_str(line).unwrap();
        let process = &alert["event"]["process"];
        let pid = process["pid"].as_u64().unwrap() as u32;
        if pid != seeded_pid && pid != execed_pid {
            continue;
        }
        if alert["policy"] == "big-connect" {
            assert_eq!(process["argv_truncated"], true, "{line}");
        }
        let argv: usize = process["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().len() + 1)
            .sum();
        assert!(argv <= 1025, "{argv} bytes of argv kept");
    }

    let log = fs::read_to_string(scratch.path("state/alerts.jsonl")).unwrap();
    assert!(log.lines().count() >= 2 * CONNECTS);
    assert!(log.lines().all(|l| l.len() < MAX_LINE));
    let addr = metrics_addr(&agent);
    assert!(metric(addr, "reflex_fields_truncated_total{field=\"argv\"}") >= 1.0);
    // The sink never answers: its spool stops at its byte bound, drops counted.
    let spooled = eventually(WAIT, || {
        metric(
            addr,
            "reflex_alerts_dropped_total{reason=\"spool_full\",sink=\"dead\"}",
        ) > 0.0
    });
    assert!(spooled, "the spool reached its bound");
    let spool = state_bytes(&scratch.path("state/spool/dead"));
    assert!(spool <= 64 << 10, "{spool} bytes spooled");
    assert!(metric(addr, "reflex_alert_spool_bytes{sink=\"dead\"}") <= (64 << 10) as f64);
    let peak_kib = reflex_tests::peak_rss_kib(agent.guard.pid());
    assert!(peak_kib < 256 << 10, "agent peak RSS {peak_kib} KiB");
}

#[test]
fn the_alert_log_rotates_at_its_bound_and_reopens_on_sighup() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("churn-tool", "/bin/true");
    let marker = scratch.tool("marker-tool", "/bin/true");
    scratch.policy(
        "churn.yaml",
        &format!(
            "name: churn\nmode: monitor\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [alert]\n---\nname: marker\nmode: monitor\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [alert]\n",
            tool.display(),
            marker.display()
        ),
    );
    let agent =
        scratch.start_with_config("alerts: { stdout: false, log_max_bytes: 16KiB, log_keep: 2 }\n");
    let state = scratch.path("state");
    let log = state.join("alerts.jsonl");
    let mut churn = ChildGuard::spawn(Command::new("/bin/sh").arg("-c").arg(format!(
        "i=0; while [ $i -lt 300 ]; do {}; i=$((i+1)); done",
        tool.display()
    )));
    churn.wait_for(WAIT).expect("the loop ends");
    // Alerts are written in order: the marker's means all of churn's are in.
    let marked =
        |path: &Path| fs::read_to_string(path).is_ok_and(|t| t.contains("\"policy\":\"marker\""));
    Command::new(&marker).status().unwrap();
    assert!(eventually(WAIT, || marked(&log)), "the marker alert");

    let mut names: Vec<String> = fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("alerts.jsonl"))
        .collect();
    names.sort();
    assert_eq!(names, ["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"]);
    let mut total = 0;
    for name in &names {
        let text = fs::read_to_string(state.join(name)).unwrap();
        assert!(text.len() <= 16 << 10, "{name}: {} bytes", text.len());
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<Value>(l).is_ok()),
            "{name}: whole lines"
        );
        let mode = fs::metadata(state.join(name)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
        total += text.len();
    }
    assert!(total <= 3 * (16 << 10), "{total} bytes on disk");
    let addr = metrics_addr(&agent);
    let rotations = metric(addr, "reflex_alert_log_rotations_total");
    assert!(
        rotations >= 4.0,
        "{rotations} rotations, {total} bytes kept"
    );

    // logrotate's way: move the file, then SIGHUP.
    let moved = state.join("moved.jsonl");
    fs::rename(&log, &moved).unwrap();
    let before = fs::metadata(&moved).unwrap().len();
    agent.guard.signal(Signal::SIGHUP);
    assert!(agent.log_line(WAIT, "alert log reopened").is_some());
    assert!(agent.log_line(WAIT, "SIGHUP: reloading policies").is_some());
    Command::new(&marker).status().unwrap();
    assert!(eventually(WAIT, || marked(&log)), "a new alerts.jsonl");
    assert_eq!(fs::metadata(&moved).unwrap().len(), before);
}

#[test]
fn the_state_directory_is_made_private_whoever_created_it() {
    require_root();
    let scratch = Scratch::new();
    let state = scratch.path("state");
    let objects = state.join("baselines/objects");
    fs::create_dir_all(&objects).unwrap();
    let old = objects.join("leftover");
    fs::write(&old, "secret\n").unwrap();
    for (path, mode) in [(&state, 0o755), (&objects, 0o775), (&old, 0o644)] {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    let managed = scratch.path("managed");
    fs::create_dir(&managed).unwrap();
    fs::write(managed.join("app.conf"), "good\n").unwrap();
    fs::set_permissions(managed.join("app.conf"), fs::Permissions::from_mode(0o644)).unwrap();
    scratch.policy(
        "keep.yaml",
        &format!(
            "name: keep\nmode: enforce\non:\n  file: {{ paths: [\"{}/app.conf\"] }}\ndo: [revert]\n",
            managed.display()
        ),
    );
    let _agent = scratch.start();
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&state), 0o700);
    for entry in walk(&state) {
        let want = if entry.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&entry), want, "{}", entry.display());
    }
    let baselines = walk(&state.join("baselines/objects"));
    assert!(
        baselines.len() >= 2,
        "the new baseline is there: {baselines:?}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(next) = todo.pop() {
        for entry in fs::read_dir(&next).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                todo.push(path.clone());
            }
            all.push(path);
        }
    }
    all
}

#[test]
fn a_readable_config_with_a_token_is_refused_and_secrets_never_reach_the_log() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("alerted-tool", "/bin/true");
    scratch.policy(
        "seen.yaml",
        &format!(
            "name: seen\nmode: monitor\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [alert]\n",
            tool.display()
        ),
    );
    let dead = free_port();
    let config = scratch.config(&format!(
        "alerts:\n  webhooks:\n    - {{ name: ops, url: 'http://user:pa55w0rd@127.0.0.1:{dead}/hook/T0K3N?token=qu3ry', bearer_token: b34rer }}\n"
    ));
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let said = scratch.path("refused.log");
    let mut refused = ChildGuard::spawn(
        scratch
            .run_command(&reflex_bin())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&said).unwrap()),
    );
    let status = refused.wait_for(WAIT).expect("it exits at once");
    assert!(!status.success());
    let stderr = fs::read_to_string(&said).unwrap();
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");

    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let mut command = scratch.run_command(&reflex_bin());
    command.arg("--config").arg(&config);
    let agent = start_agent_with(&mut command, "reflex running");
    Command::new(&tool).status().unwrap();
    assert!(agent.log_line(WAIT, "alert delivery failed").is_some());
    let log = agent.log.borrow().join("\n");
    for secret in ["pa55w0rd", "T0K3N", "qu3ry", "b34rer"] {
        assert!(
            !log.contains(secret) && !stderr.contains(secret),
            "{secret} in the log"
        );
    }
}

#[test]
fn a_hook_gets_its_policy_and_leaves_no_grandchild_behind() {
    require_root();
    let scratch = Scratch::new();
    let tool = scratch.tool("hook-trigger", "/bin/true");
    let out = scratch.path("hook-out");
    let pids = scratch.path("hook-pids");
    scratch.policy(
        "hook.yaml",
        &format!(
            "name: hooked\nmode: enforce\non:\n  exec: {{ paths: [\"{}\"] }}\ndo:\n  - run: {{ command: [\"/bin/sh\", \"-c\", \"echo $1 $2 > {}; sleep 300 & echo $! > {}; wait\", \"hook\", \"{{policy.name}}\", \"{{policy.mode}}\"], timeout: 2s }}\n",
            tool.display(),
            out.display(),
            pids.display()
        ),
    );
    let agent = scratch.start();
    Command::new(&tool).status().unwrap();
    let read_pid = || fs::read_to_string(&pids).ok()?.trim().parse::<u32>().ok();
    assert!(eventually(WAIT, || read_pid().is_some()), "the hook ran");
    let grandchild = Leftover(read_pid());
    assert_eq!(fs::read_to_string(&out).unwrap(), "hooked enforce\n");
    assert!(
        agent
            .log_line(WAIT, "hook timed out and was killed")
            .is_some()
    );
    let pid = grandchild.0.unwrap();
    assert!(
        eventually(WAIT, || !running(pid)),
        "grandchild {pid} outlived the hook"
    );
    let addr = metrics_addr(&agent);
    assert_eq!(
        metric(addr, "reflex_hooks_timed_out_total{policy=\"hooked\"}"),
        1.0
    );
}
