//! The Falco alert form (`format: falcosidekick` on a webhook), so that
//! Falcosidekick and what it feeds (Slack, Loki, Elasticsearch, Falco Talon
//! and the rest) take reflex's decisions unchanged: `output`, `priority`,
//! `rule`, `time`, `output_fields`, `source`, `tags`, `hostname`.
//!
//! `output_fields` uses Falco's field names where one means the same thing
//! (`proc.pid`, `proc.exepath`, `fd.name`, `fd.sip`, ...), and `reflex.*`
//! for what Falco has no name for (the mode, the actions and their results).
use serde_json::{Map, Value, json};

/// What Falcosidekick calls the event source.
pub const SOURCE: &str = "reflex";

/// Falco's priority for a reflex severity (Falco's names, which
/// Falcosidekick parses case-blind; an unknown severity is `Warning`).
pub fn priority(severity: &str) -> &'static str {
    match severity {
        "info" => "Informational",
        "critical" => "Critical",
        _ => "Warning",
    }
}

/// The Falco form of one alert as spooled (read as a value: an alert cut
/// to its line bound, or a stub of one, is still sent).
pub fn payload(alert: &Value, hostname: &str) -> Value {
    let event = &alert["event"];
    let kind = event["kind"].as_str().unwrap_or("");
    let mut fields = Map::new();
    let mut put = |name: &str, value: &Value| {
        if !value.is_null() {
            fields.insert(name.to_string(), value.clone());
        }
    };
    put("evt.type", &event["kind"]);
    put("evt.time.iso8601", &event["time"]);
    let process = &event["process"];
    put("proc.pid", &process["pid"]);
    put("proc.ppid", &process["ppid"]);
    put("proc.name", &process["comm"]);
    put("proc.exepath", &process["exe"]);
    put("user.uid", &process["uid"]);
    put("group.gid", &process["gid"]);
    put("proc.pname", &process["parent"]["comm"]);
    put("proc.pexepath", &process["parent"]["exe"]);
    if let Some(argv) = process["argv"].as_array() {
        let words: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
        put("proc.cmdline", &json!(words.join(" ")));
    }
    put("proc.cgroup_id", &process["cgroup_id"]);
    match kind {
        "file" => {
            let file = &event["file"];
            let path = if file["path"].is_null() {
                &file["arg_path"]
            } else {
                &file["path"]
            };
            put("fd.name", path);
            put("reflex.file.changes", &file["changes"]);
        }
        "connect" => {
            let connect = &event["connect"];
            put("fd.sip", &connect["remote_addr"]);
            put("fd.sport", &connect["remote_port"]);
            put("fd.cip", &connect["local_addr"]);
            put("fd.cport", &connect["local_port"]);
            put("fd.l4proto", &connect["protocol"]);
            put("reflex.connect.direction", &connect["direction"]);
        }
        "exec" => {
            let exec = &event["exec"];
            put("proc.exe", &exec["filename"]);
            put("reflex.exec.script", &exec["script"]);
        }
        _ => {}
    }
    put("reflex.policy", &alert["policy"]);
    put("reflex.mode", &alert["mode"]);
    put("reflex.actions", &alert["actions"]);
    put("reflex.would", &alert["would"]);
    put("reflex.results", &alert["results"]);
    put("reflex.evidence.sha256", &alert["evidence"]["sha256"]);
    put("reflex.truncated", &alert["truncated"]);
    let mut tags = vec![SOURCE.to_string()];
    if !kind.is_empty() {
        tags.push(kind.to_string());
    }
    if let Some(mode) = alert["mode"].as_str() {
        tags.push(mode.to_string());
    }
    if let Some(labels) = alert["labels"].as_object() {
        for (k, v) in labels {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            tags.push(format!("{k}={v}"));
        }
    }
    let summary = alert["summary"].as_str().unwrap_or("");
    let mode = alert["mode"].as_str().unwrap_or("");
    let time = alert["time"].as_str().unwrap_or("");
    let priority = priority(alert["severity"].as_str().unwrap_or(""));
    json!({
        "output": format!("{} {priority}: {summary} (mode={mode})", clock(time)),
        "priority": priority,
        "rule": alert["policy"],
        "time": time,
        "output_fields": fields,
        "source": SOURCE,
        "tags": tags,
        "hostname": hostname,
    })
}

/// `HH:MM:SS.nnnnnnnnn` of an RFC 3339 time, as Falco's outputs begin.
fn clock(time: &str) -> &str {
    time.get(11..).map_or(time, |t| t.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_alert() -> Value {
        json!({
            "time": "2026-11-30T02:10:11.123456789Z",
            "policy": "etc-hosts",
            "mode": "enforce",
            "actions": ["revert", "alert"],
            "would": [],
            "suppressed": 0,
            "severity": "critical",
            "summary": "etc-hosts: /etc/hosts changed by /usr/bin/vi (pid 42)",
            "labels": {"team": "ops"},
            "results": [{"action": "revert", "ok": true, "detail": "restored"}],
            "event": {
                "time": "2026-11-30T02:10:11.100000000Z",
                "ktime_ns": 5,
                "kind": "file",
                "process": {"pid": 42, "tid": 42, "ppid": 1, "uid": 1000, "gid": 1000,
                    "comm": "vi", "exe": "/usr/bin/vi", "argv": ["vi", "/etc/hosts"],
                    "cgroup_id": 7, "parent": {"pid": 1, "exe": "/sbin/init", "comm": "init"}},
                "file": {"path": "/etc/hosts", "arg_path": "hosts", "changes": ["write"]}
            },
            "evidence": {"path": "/etc/hosts", "sha256": "ab"}
        })
    }

    /// The fields Falcosidekick's `FalcoPayload` reads, with the types it
    /// decodes them into (and that its UI's validation requires).
    #[test]
    fn a_file_alert_has_falcos_schema_and_field_names() {
        let p = payload(&file_alert(), "web-3");
        assert_eq!(p["rule"], "etc-hosts");
        assert_eq!(p["priority"], "Critical");
        assert_eq!(p["source"], "reflex");
        assert_eq!(p["hostname"], "web-3");
        assert_eq!(p["time"], "2026-11-30T02:10:11.123456789Z");
        assert!(humantime::parse_rfc3339(p["time"].as_str().unwrap()).is_ok());
        assert_eq!(
            p["output"],
            "02:10:11.123456789 Critical: etc-hosts: /etc/hosts changed by /usr/bin/vi (pid 42) (mode=enforce)"
        );
        assert!(p["output"].as_str().unwrap().is_ascii());
        let tags: Vec<&str> = p["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tags, ["reflex", "file", "enforce", "team=ops"]);
        let f = p["output_fields"].as_object().unwrap();
        assert_eq!(f["fd.name"], "/etc/hosts");
        assert_eq!(f["proc.pid"], 42);
        assert_eq!(f["proc.exepath"], "/usr/bin/vi");
        assert_eq!(f["proc.cmdline"], "vi /etc/hosts");
        assert_eq!(f["proc.pname"], "init");
        assert_eq!(f["user.uid"], 1000);
        assert_eq!(f["reflex.mode"], "enforce");
        assert_eq!(f["reflex.actions"], json!(["revert", "alert"]));
        assert_eq!(f["reflex.evidence.sha256"], "ab");
        // Every value is a scalar or a list/map Falcosidekick passes on.
        assert!(!f.values().any(Value::is_null));
    }

    #[test]
    fn a_connect_alert_names_the_peer_as_falco_does() {
        let alert = json!({
            "time": "2026-11-30T02:10:11Z", "policy": "egress", "mode": "monitor",
            "severity": "info", "summary": "s",
            "event": {"kind": "connect", "process": {"pid": 7},
                "connect": {"remote_addr": "10.0.0.1", "remote_port": 443,
                    "local_addr": "10.0.0.2", "local_port": 5000,
                    "protocol": "tcp", "direction": "outbound"}}
        });
        let p = payload(&alert, "h");
        assert_eq!(p["priority"], "Informational");
        let f = &p["output_fields"];
        assert_eq!(f["fd.sip"], "10.0.0.1");
        assert_eq!(f["fd.sport"], 443);
        assert_eq!(f["fd.l4proto"], "tcp");
    }

    #[test]
    fn a_stub_alert_still_makes_a_payload() {
        let stub = json!({"time": "t", "policy": "p", "mode": "enforce", "severity": "warning",
            "summary": "s", "truncated": true, "event": {"kind": "exec", "process": {"pid": 1}}});
        let p = payload(&stub, "h");
        assert_eq!(p["rule"], "p");
        assert_eq!(p["priority"], "Warning");
        assert_eq!(p["output_fields"]["reflex.truncated"], true);
    }
}
