//! The policy file format, as serde reads it. Field by field documentation:
//! `policies/README.md`. Validation that needs more than one field lives in
//! `compile.rs`.
use std::{collections::BTreeMap, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, Visitor},
};

pub use crate::events::{
    connect::{Direction, Protocol},
    cpu::CpuScope,
    file::FileChange,
};

use super::{
    accept::{AcceptSpec, EvidenceMode, OnDrift},
    checked::Checked,
    value::{Cidr, DurationValue, NameGlob, PathGlob, Percent, PortRange, SignalValue, Template},
};

/// One policy document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Unique name; the alert name.
    pub name: Checked<String>,
    /// What the policy is for.
    #[serde(default)]
    pub description: Checked<String>,
    /// `enforce` acts; `monitor` (the default) only reports what it would do.
    #[serde(default)]
    pub mode: Checked<Mode>,
    /// The event family and its conditions.
    pub on: OnSpec,
    /// Process conditions that must all hold.
    #[serde(default)]
    pub when: Option<ConditionSpec>,
    /// Process conditions any of which exempts the event.
    #[serde(default)]
    pub unless: Option<ConditionSpec>,
    /// Actions, in order.
    #[serde(rename = "do")]
    pub actions: Vec<ActionSpec>,
    /// Limits on alerts and hooks.
    #[serde(default)]
    pub throttle: Option<ThrottleSpec>,
    /// Extra labels for alert sinks.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Writers whose changes become the baseline (file policies with `revert`).
    #[serde(default)]
    pub accept_from: Option<AcceptSpec>,
    /// What a change found at start-up becomes (file policies with `revert`).
    #[serde(default)]
    pub on_drift: Checked<OnDrift>,
    /// What a revert keeps of the content it rejects.
    #[serde(default)]
    pub evidence: Checked<EvidenceMode>,
}

/// Whether a policy acts or only reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Carry out the actions.
    Enforce,
    /// Report what would be done, do nothing.
    #[default]
    Monitor,
}

impl Mode {
    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

/// The event family a policy answers, with its conditions; written as a
/// one-key map such as `on: {exec: {paths: [...]}}`.
#[derive(Debug)]
pub enum OnSpec {
    /// A process executed a new image.
    Exec(ExecOn),
    /// A watched file changed.
    File(FileOn),
    /// A connection was made, accepted or a socket started listening.
    Connect(ConnectOn),
    /// CPU use crossed a threshold for a while.
    Cpu(CpuOn),
}

/// `on: exec`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecOn {
    /// Executable paths or globs; empty matches every exec.
    #[serde(default)]
    pub paths: Vec<Checked<PathGlob>>,
}

/// `on: file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOn {
    /// Watched files or globs (globs also cover files created later).
    pub paths: Vec<Checked<PathGlob>>,
    /// Which changes count; empty means every change.
    #[serde(default)]
    pub events: Vec<Checked<FileChange>>,
}

/// `on: connect`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectOn {
    /// Which side; empty means all.
    #[serde(default)]
    pub direction: Vec<Checked<Direction>>,
    /// Remote networks; empty means any.
    #[serde(default)]
    pub remote: Vec<Checked<Cidr>>,
    /// Remote networks exempted from `remote`.
    #[serde(default)]
    pub except: Vec<Checked<Cidr>>,
    /// Remote ports or ranges (local port for `listen`); empty means any.
    #[serde(default)]
    pub ports: Vec<Checked<PortRange>>,
    /// Transport; empty means both.
    #[serde(default)]
    pub protocol: Vec<Checked<Protocol>>,
}

/// `on: cpu`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuOn {
    /// `process` (percent of one core) or `host` (percent of all cores).
    pub scope: Checked<CpuScope>,
    /// Threshold.
    pub above: Checked<Percent>,
    /// How long the threshold must hold.
    #[serde(rename = "for")]
    pub duration: Checked<DurationValue>,
}

/// `when:` / `unless:` conditions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// Conditions on the process behind the event.
    pub process: ProcessCondition,
}

/// Conditions on a process. Within a list any entry matches; across fields all must.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessCondition {
    /// Executable paths or globs.
    #[serde(default)]
    pub exe: Vec<Checked<PathGlob>>,
    /// Command names or globs.
    #[serde(default)]
    pub comm: Vec<Checked<NameGlob>>,
    /// Real user ids.
    #[serde(default)]
    pub uid: Vec<Checked<u32>>,
    /// Parent executable paths or globs.
    #[serde(default)]
    pub parent_exe: Vec<Checked<PathGlob>>,
    /// Paths or globs any of the process's ancestors (or the process
    /// itself) was: its resolved executable or the file it exec'd.
    #[serde(default)]
    pub ancestor_exe: Vec<Checked<PathGlob>>,
    /// systemd units (names or globs), system or user.
    #[serde(default)]
    pub unit: Vec<Checked<NameGlob>>,
    /// `true`, `false`, or globs on the container's id, name or image.
    #[serde(default)]
    pub container: Option<super::identity::ContainerSpec>,
    /// cgroup v2 paths or globs (`/system.slice/*.service`).
    #[serde(default)]
    pub cgroup: Vec<Checked<PathGlob>>,
    /// Globs on the command line, or argument position → glob.
    #[serde(default)]
    pub argv: Option<super::identity::ArgvSpec>,
    /// Login user ids (`loginuid`).
    #[serde(default)]
    pub login_uid: Vec<Checked<u32>>,
}

/// One action in `do:`; written `- kill` or `- kill: { ... }`.
#[derive(Debug)]
pub enum ActionSpec {
    /// Kill the process (or its parent).
    Kill(KillSpec),
    /// Report the decision.
    Alert(AlertSpec),
    /// Run a hook command.
    Run(RunSpec),
    /// Restore a watched file (file family).
    Revert(RevertSpec),
    /// Refuse the connection in the kernel (connect family).
    Block(BlockSpec),
}

impl ActionSpec {
    /// Every action name, for messages.
    pub const NAMES: [&'static str; 5] = ["kill", "alert", "run", "revert", "block"];

    /// The action's name.
    pub fn name(&self) -> &'static str {
        match self {
            ActionSpec::Kill(_) => "kill",
            ActionSpec::Alert(_) => "alert",
            ActionSpec::Run(_) => "run",
            ActionSpec::Revert(_) => "revert",
            ActionSpec::Block(_) => "block",
        }
    }
}

/// `kill:` options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillSpec {
    /// Signal to send (default SIGKILL).
    #[serde(default)]
    pub signal: Checked<SignalValue>,
    /// Whom to signal.
    #[serde(default)]
    pub target: Checked<KillTarget>,
}

/// Whom a kill signals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillTarget {
    /// The process behind the event.
    #[default]
    Process,
    /// Its parent.
    Parent,
}

/// `alert:` options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    /// Severity label.
    #[serde(default)]
    pub severity: Checked<Severity>,
    /// One-line summary, with `{field}` placeholders.
    #[serde(default)]
    pub summary: Option<Checked<Template>>,
}

/// Alert severity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Someone should look.
    #[default]
    Warning,
    /// Someone should look now.
    Critical,
}

/// `run:` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Program and arguments, each a template; the program must be absolute.
    pub command: Vec<Checked<Template>>,
    /// Kill the hook after this long (default 30s).
    #[serde(default)]
    pub timeout: Option<Checked<DurationValue>>,
}

/// `revert:` options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevertSpec {
    /// Golden file to restore from instead of the recorded baseline.
    #[serde(default)]
    pub source: Option<Checked<PathGlob>>,
}

/// `block:` options (none yet).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSpec {}

/// `throttle:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSpec {
    /// What each budget is counted per.
    #[serde(default)]
    pub per: Checked<ThrottleKey>,
    /// Alerts and hooks allowed per window.
    pub max: Checked<u32>,
    /// Window length.
    pub every: Checked<DurationValue>,
}

/// What a throttle budget is kept per.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThrottleKey {
    /// One budget for the whole policy.
    Policy,
    /// One per process.
    #[default]
    Process,
    /// One per file (file family).
    File,
    /// One per remote address (connect family).
    Remote,
}

impl<'de> Deserialize<'de> for ActionSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ActionVisitor)
    }
}

struct ActionVisitor;

fn unknown_action<E: de::Error>(name: &str) -> E {
    E::custom(format!(
        "unknown action `{name}`, expected one of {}",
        ActionSpec::NAMES.join(", ")
    ))
}

impl<'de> Visitor<'de> for ActionVisitor {
    type Value = ActionSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an action: `kill`, `alert`, `revert`, `block`, or a map such as `run: {command: [...]}`")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<ActionSpec, E> {
        Ok(match name {
            "kill" => ActionSpec::Kill(KillSpec::default()),
            "alert" => ActionSpec::Alert(AlertSpec::default()),
            "revert" => ActionSpec::Revert(RevertSpec::default()),
            "block" => ActionSpec::Block(BlockSpec::default()),
            "run" => {
                return Err(E::custom(
                    "`run` needs options: `run: {command: [\"/path/to/hook\", \"{process.exe}\"]}`",
                ));
            }
            other => return Err(unknown_action(other)),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ActionSpec, A::Error> {
        let Some(name) = map.next_key::<String>()? else {
            return Err(de::Error::custom("empty action"));
        };
        let action = match name.as_str() {
            "kill" => ActionSpec::Kill(map.next_value()?),
            "alert" => ActionSpec::Alert(map.next_value()?),
            "run" => ActionSpec::Run(map.next_value()?),
            "revert" => ActionSpec::Revert(map.next_value()?),
            "block" => ActionSpec::Block(map.next_value()?),
            other => return Err(unknown_action(other)),
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "one action per list item: `{name}` and `{extra}` must be separate `- ` entries"
            )));
        }
        Ok(action)
    }
}

crate::scalar_enum!(Mode, "`enforce` or `monitor`", {
    "enforce" => Mode::Enforce, "monitor" => Mode::Monitor,
});
crate::scalar_enum!(FileChange, "one of write, close_write, truncate, rename, unlink, chmod, chown, link, attrib, create, drift, accepted", {
    "write" => FileChange::Write, "close_write" => FileChange::CloseWrite,
    "truncate" => FileChange::Truncate, "rename" => FileChange::Rename,
    "unlink" => FileChange::Unlink, "chmod" => FileChange::Chmod, "chown" => FileChange::Chown,
    "link" => FileChange::Link, "attrib" => FileChange::Attrib, "create" => FileChange::Create, "drift" => FileChange::Drift,
    "accepted" => FileChange::Accepted,
});
crate::scalar_enum!(Direction, "one of outbound, inbound, listen", {
    "outbound" => Direction::Outbound, "inbound" => Direction::Inbound, "listen" => Direction::Listen,
});
crate::scalar_enum!(Protocol, "`tcp` or `udp`", { "tcp" => Protocol::Tcp, "udp" => Protocol::Udp });
crate::scalar_enum!(CpuScope, "`process` or `host`", {
    "process" => CpuScope::Process, "host" => CpuScope::Host,
});
crate::scalar_enum!(KillTarget, "`process` or `parent`", {
    "process" => KillTarget::Process, "parent" => KillTarget::Parent,
});
crate::scalar_enum!(Severity, "one of info, warning, critical", {
    "info" => Severity::Info, "warning" => Severity::Warning, "critical" => Severity::Critical,
});
crate::scalar_enum!(ThrottleKey, "one of policy, process, file, remote", {
    "policy" => ThrottleKey::Policy, "process" => ThrottleKey::Process,
    "file" => ThrottleKey::File, "remote" => ThrottleKey::Remote,
});

impl<'de> Deserialize<'de> for OnSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OnVisitor)
    }
}

struct OnVisitor;

const FAMILIES: &str = "exec, file, connect, cpu";

impl<'de> Visitor<'de> for OnVisitor {
    type Value = OnSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "one event family ({FAMILIES}) with its conditions, e.g. `exec: {{paths: [...]}}`"
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OnSpec, A::Error> {
        let Some(family) = map.next_key::<String>()? else {
            return Err(de::Error::custom(format!(
                "`on` is empty; expected one of {FAMILIES}"
            )));
        };
        let on = match family.as_str() {
            "exec" => OnSpec::Exec(map.next_value::<Option<ExecOn>>()?.unwrap_or_default()),
            "file" => OnSpec::File(map.next_value()?),
            "connect" => {
                OnSpec::Connect(map.next_value::<Option<ConnectOn>>()?.unwrap_or_default())
            }
            "cpu" => OnSpec::Cpu(map.next_value()?),
            other => {
                return Err(de::Error::custom(format!(
                    "unknown event family `{other}`, expected one of {FAMILIES}"
                )));
            }
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "a policy answers one family: `{family}` and `{extra}` need separate policies"
            )));
        }
        Ok(on)
    }
}
