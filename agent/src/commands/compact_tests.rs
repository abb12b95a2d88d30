use super::*;

fn record(json: serde_json::Value) -> Record {
    serde_json::from_value(json).expect("a record")
}

fn process(pid: u32, comm: &str) -> serde_json::Value {
    serde_json::json!({
        "pid": pid, "tid": pid, "ppid": 1, "uid": 0, "gid": 0, "comm": comm,
        "exe": "/usr/bin/dash", "argv": [], "cgroup_id": 1, "start_ktime_ns": null,
        "parent": {"pid": 7675, "exe": "/usr/bin/bash", "comm": "bash"}
    })
}

const PLAIN: Paint = Paint(false);

#[test]
fn an_exec_names_the_process_what_it_ran_and_its_parent() {
    let r = record(serde_json::json!({
        "time": "2026-11-26T15:58:32.144480569Z", "ktime_ns": 1, "kind": "exec",
        "process": process(8026, "sh"),
        "exec": {"filename": "/bin/sh", "argv": ["/bin/sh", "-c", "exit 3"],
                 "argv_truncated": false, "killed": true}
    }));
    assert_eq!(
        event_line(&r, PLAIN),
        "15:58:32.144 EXEC  sh[8026] ran /usr/bin/dash: /bin/sh -c exit 3 from bash[7675] KILLED at exec"
    );
}

#[test]
fn exits_files_and_connects_say_what_happened() {
    let exit = record(serde_json::json!({
        "time": "2026-11-26T15:58:32.144480569Z", "ktime_ns": 1, "kind": "exit",
        "process": process(8026, "sh"),
        "exit": {"code": null, "signal": 9, "core_dumped": false}
    }));
    assert!(event_line(&exit, PLAIN).ends_with("EXIT  sh[8026] killed by signal 9"));
    let file = record(serde_json::json!({
        "time": "2026-11-26T15:58:32.144480569Z", "ktime_ns": 1, "kind": "file",
        "process": process(51, "vi"),
        "file": {"path": "/etc/app.conf", "changes": ["write", "close_write"], "dev": 1, "ino": 2,
                 "matched_by": "inode", "fd": 3, "killed": false}
    }));
    assert!(
        event_line(&file, PLAIN).ends_with("FILE  vi[51] write+close_write /etc/app.conf"),
        "{}",
        event_line(&file, PLAIN)
    );
    let connect = record(serde_json::json!({
        "time": "2026-11-26T15:58:32.144480569Z", "ktime_ns": 1, "kind": "connect",
        "process": process(77, "curl"),
        "connect": {"direction": "outbound", "protocol": "tcp", "local_addr": "0.0.0.0",
                    "local_port": 0, "remote_addr": "::1", "remote_port": 443, "blocked": true}
    }));
    assert!(
        event_line(&connect, PLAIN).ends_with("CONN  curl[77] connected tcp to [::1]:443 BLOCKED")
    );
}

#[test]
fn colour_is_added_only_when_painting() {
    let r = record(serde_json::json!({
        "time": "2026-11-26T15:58:32.144480569Z", "ktime_ns": 1, "kind": "exit",
        "process": process(8026, "sh"),
        "exit": {"code": 0, "signal": null, "core_dumped": false}
    }));
    assert!(!event_line(&r, PLAIN).contains('\x1b'));
    assert!(event_line(&r, Paint(true)).contains("\x1b[2mEXIT "));
}

#[test]
fn a_decision_shows_the_policy_mode_and_what_was_done() {
    let alert = serde_json::json!({
        "time": "2026-11-26T15:58:33.000000000Z", "policy": "app-conf", "mode": "enforce",
        "actions": ["revert"], "would": [], "suppressed": 0, "summary": "restored",
        "results": [{"action": "revert", "ok": true, "detail": "restored"},
                    {"action": "kill", "ok": false, "detail": "gone"}],
        "event": {"kind": "file", "process": {"pid": 51, "comm": "vi"}}
    });
    assert_eq!(
        decision_line(&alert, PLAIN),
        "15:58:33.000 DECIDE app-conf (enforce) on file by vi[51]: revert, kill FAILED - restored"
    );
    let monitor = serde_json::json!({
        "policy": "p", "mode": "monitor", "would": ["kill"], "results": [], "event": {}
    });
    assert!(decision_line(&monitor, PLAIN).ends_with("p (monitor) would kill"));
}

#[test]
fn where_a_process_runs_is_shown_and_read_back() {
    let id = "4f0e2bc7a1d3c9e8b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa0";
    let mut p = process(8026, "sh");
    p["cgroup"] = serde_json::json!(format!("/system.slice/docker-{id}.scope"));
    p["unit"] = serde_json::json!(format!("docker-{id}.scope"));
    p["container"] = serde_json::json!({"id": id, "runtime": "docker"});
    let r = record(serde_json::json!({
        "time": "2026-11-26T15:58:32.144480569Z", "ktime_ns": 1, "kind": "exit",
        "process": p,
        "exit": {"code": 0, "signal": null, "core_dumped": false}
    }));
    assert!(
        event_line(&r, PLAIN).ends_with("exited 0 container=docker:4f0e2bc7a1d3"),
        "{}",
        event_line(&r, PLAIN)
    );
    let again = record(serde_json::to_value(&r).expect("serialises"));
    assert_eq!(
        again, r,
        "the identity is flattened into process and read back"
    );
    let json = serde_json::to_value(&r).expect("serialises");
    assert_eq!(json["process"]["container"]["runtime"], "docker");

    let mut p = process(1, "nginx");
    p["cgroup"] = serde_json::json!("/system.slice/nginx.service");
    p["unit"] = serde_json::json!("nginx.service");
    let r = record(serde_json::json!({
        "time": "2026-11-26T15:58:32.144480569Z", "ktime_ns": 1, "kind": "exit",
        "process": p,
        "exit": {"code": 0, "signal": null, "core_dumped": false}
    }));
    assert!(event_line(&r, PLAIN).ends_with(" unit=nginx.service"));
}
