//! One human line per event or decision: `reflex events -o compact` and
//! the last decisions of `reflex status`. A short tag per kind, the process
//! as `comm[pid]`, what happened; colour only when asked for (a terminal
//! without `NO_COLOR`).
use std::{fmt::Write as _, io::IsTerminal as _};

use crate::events::{Body, Exec, Exit, Fork, Kind, Record, connect::Connect, cpu::Cpu, file::File};

/// Whether to colour text written to stdout: a terminal, and no
/// `NO_COLOR` (<https://no-color.org>: set and not empty).
pub fn colour_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// An SGR colour, or nothing when colour is off.
#[derive(Clone, Copy)]
pub struct Paint(pub bool);

impl Paint {
    /// `text` in the SGR `code` (e.g. `"1;31"`), when painting.
    pub fn paint(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// Red, bold: something was stopped or failed.
const ALARM: &str = "1;31";
/// Dim: context.
const DIM: &str = "2";

/// The tag of a kind, padded to one width, and its colour.
fn tag(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Exec => ("EXEC ", "32"),
        Kind::Exit => ("EXIT ", "2"),
        Kind::Fork => ("FORK ", "2"),
        Kind::File => ("FILE ", "33"),
        Kind::Connect => ("CONN ", "36"),
        Kind::CpuHigh => ("CPU+ ", "35"),
        Kind::CpuNormal => ("CPU- ", "35"),
    }
}

/// `HH:MM:SS.mmm` of an RFC 3339 time, or the time as given.
fn clock(time: &str) -> &str {
    time.get(11..23).unwrap_or(time)
}

/// `comm[pid]`.
pub fn who(comm: &str, pid: u64) -> String {
    format!("{comm}[{pid}]")
}

/// One line for `record` (no newline).
pub fn event_line(record: &Record, paint: Paint) -> String {
    let (label, colour) = tag(record.kind);
    let p = &record.process;
    let mut line = format!(
        "{} {} {} ",
        paint.paint(DIM, clock(&record.time)),
        paint.paint(colour, label),
        who(&p.comm, p.pid.into())
    );
    match &record.body {
        Body::Exec(exec) => exec_text(&mut line, record, exec, paint),
        Body::Exit(exit) => exit_text(&mut line, exit),
        Body::Fork(fork) => fork_text(&mut line, fork),
        Body::File(file) => file_text(&mut line, file, paint),
        Body::Connect(c) => connect_text(&mut line, c, paint),
        Body::Cpu(cpu) => cpu_text(&mut line, cpu),
    }
    if p.uid != 0 {
        let _ = write!(line, " {}", paint.paint(DIM, &format!("uid={}", p.uid)));
    }
    if let Some(place) = p.identity.as_deref().and_then(place) {
        let _ = write!(line, " {}", paint.paint(DIM, &place));
    }
    line
}

/// Where a process runs, shortest first: its container (by name, or the
/// id's first 12 digits as `docker ps` shows them), else its unit.
fn place(identity: &crate::identity::Identity) -> Option<String> {
    if let Some(c) = &identity.container {
        let runtime = serde_json::to_value(c.runtime).ok()?;
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| c.id.chars().take(12).collect());
        return Some(format!("container={}:{name}", runtime.as_str()?));
    }
    let unit = identity.user_unit.as_ref().or(identity.unit.as_ref())?;
    Some(format!("unit={unit}"))
}

fn exec_text(line: &mut String, record: &Record, exec: &Exec, paint: Paint) {
    let exe = record.process.exe.as_deref().unwrap_or(&exec.filename);
    let _ = write!(line, "ran {exe}");
    if let Some(script) = &exec.script {
        let _ = write!(line, " {script}");
    }
    if exec.argv.len() > 1 {
        let _ = write!(line, ": {}", exec.argv.join(" "));
    }
    if exec.argv_truncated {
        line.push('…');
    }
    if let Some(parent) = &record.process.parent {
        let comm = parent.comm.as_deref().unwrap_or("?");
        let _ = write!(
            line,
            " {}",
            paint.paint(DIM, &format!("from {}", who(comm, parent.pid.into())))
        );
    }
    if exec.killed {
        let _ = write!(line, " {}", paint.paint(ALARM, "KILLED at exec"));
    }
}

fn exit_text(line: &mut String, exit: &Exit) {
    match (exit.code, exit.signal) {
        (_, Some(signal)) => {
            let _ = write!(line, "killed by signal {signal}");
            if exit.core_dumped {
                line.push_str(" (core dumped)");
            }
        }
        (Some(code), None) => {
            let _ = write!(line, "exited {code}");
        }
        (None, None) => line.push_str("exited"),
    }
}

fn fork_text(line: &mut String, fork: &Fork) {
    let _ = write!(line, "started pid {}", fork.child_pid);
    if fork.sibling {
        line.push_str(" (as a sibling)");
    }
}

fn file_text(line: &mut String, file: &File, paint: Paint) {
    let changes: Vec<&str> = if file.changes.is_empty() {
        file.change.iter().map(|c| c.as_str()).collect()
    } else {
        file.changes.iter().map(|c| c.as_str()).collect()
    };
    let path = file.path.as_deref().unwrap_or(&file.arg_path);
    let what = if changes.is_empty() {
        "touched".to_string()
    } else {
        changes.join("+")
    };
    let _ = write!(line, "{what} {path}");
    if let Some(why) = &file.unverified {
        let _ = write!(
            line,
            " {}",
            paint.paint(ALARM, &format!("unverified: {why}"))
        );
    }
    if file.killed {
        let _ = write!(line, " {}", paint.paint(ALARM, "KILLED in the syscall"));
    }
}

fn connect_text(line: &mut String, c: &Connect, paint: Paint) {
    use crate::events::connect::{Direction, Protocol};
    let proto = match c.protocol {
        Some(Protocol::Tcp) => "tcp",
        Some(Protocol::Udp) => "udp",
        None => "ip",
    };
    let remote = addr(c.remote_addr, c.remote_port);
    let local = addr(c.local_addr, c.local_port);
    let _ = match c.direction {
        Direction::Outbound if c.datagram => write!(line, "sent {proto} to {remote}"),
        Direction::Outbound => write!(line, "connected {proto} to {remote}"),
        Direction::Inbound => write!(line, "accepted {proto} from {remote} on {local}"),
        Direction::Listen => write!(line, "listens {proto} on {local}"),
    };
    if c.suppressed > 0 {
        let _ = write!(line, " (+{} more)", c.suppressed);
    }
    if c.blocked {
        let _ = write!(line, " {}", paint.paint(ALARM, "BLOCKED"));
    }
}

fn addr(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn cpu_text(line: &mut String, cpu: &Cpu) {
    use crate::events::cpu::{CpuScope, CpuState};
    let state = match cpu.state {
        CpuState::High => "high",
        CpuState::Normal => "back to normal",
    };
    let scope = match cpu.scope {
        CpuScope::Process => "process",
        CpuScope::Host => "host",
    };
    let _ = write!(
        line,
        "cpu {state} ({scope} {:.1}%, host {:.1}%) for policy {}",
        cpu.percent, cpu.host_percent, cpu.policy
    );
    if let Some(top) = cpu.top.first() {
        let _ = write!(
            line,
            "; top {} {:.1}%",
            who(&top.comm, top.pid.into()),
            top.percent
        );
    }
}

/// One line for an alert (a decision) as `alerts.jsonl` holds it; read as
/// loose JSON so that a cut line (a stub) still shows its policy.
pub fn decision_line(alert: &serde_json::Value, paint: Paint) -> String {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    let mode = text(&alert["mode"]);
    let event = &alert["event"];
    let process = &event["process"];
    let mut line = format!(
        "{} {} {} {} ",
        paint.paint(DIM, clock(alert["time"].as_str().unwrap_or(""))),
        paint.paint("1", "DECIDE"),
        text(&alert["policy"]),
        paint.paint(DIM, &format!("({mode})")),
    );
    if let Some(kind) = event["kind"].as_str() {
        let _ = write!(
            line,
            "on {kind} by {}: ",
            who(
                process["comm"].as_str().unwrap_or("?"),
                process["pid"].as_u64().unwrap_or(0)
            )
        );
    }
    let results: Vec<String> = alert["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let action = text(&r["action"]);
            if r["ok"].as_bool() == Some(false) {
                paint.paint(ALARM, &format!("{action} FAILED"))
            } else {
                action
            }
        })
        .collect();
    let would: Vec<String> = alert["would"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    match (results.is_empty(), would.is_empty()) {
        (false, _) => line.push_str(&results.join(", ")),
        (true, false) => {
            let _ = write!(line, "would {}", would.join(", "));
        }
        (true, true) => line.push_str("reported"),
    }
    if let Some(summary) = alert["summary"].as_str().filter(|s| !s.is_empty()) {
        let _ = write!(line, " {}", paint.paint(DIM, &format!("- {summary}")));
    }
    line
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;
