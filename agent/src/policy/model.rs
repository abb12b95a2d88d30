//! Compiled policies: validated, with globs built, ready to evaluate.
use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use globset::GlobSet;
use nix::sys::signal::Signal;

use super::{
    accept::FileAnswers,
    checked::Position,
    identity::{ArgvMatch, ContainerMatch},
    spec::{
        ConnectOn, CpuScope, Direction, FileChange, KillTarget, Mode, Protocol, Severity,
        ThrottleKey,
    },
    value::{Cidr, PathGlob, PortRange, Template},
};
use crate::events::ProcessContext;

/// A policy ready to evaluate.
#[derive(Debug)]
pub struct Policy {
    /// Unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Enforce or monitor.
    pub mode: Mode,
    /// File and position it was read from.
    pub origin: (PathBuf, Position),
    /// The family and its conditions.
    pub trigger: Trigger,
    /// Conditions that must all hold.
    pub when: Option<ProcessMatcher>,
    /// Conditions any of which exempts the event.
    pub unless: Option<ProcessMatcher>,
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// Limits on alerts and hooks.
    pub throttle: Option<Throttle>,
    /// Extra labels for alert sinks.
    pub labels: BTreeMap<String, String>,
    /// `accept_from`, `on_drift` and `evidence` (file policies).
    pub answers: FileAnswers,
}

/// A shared compiled policy.
pub type PolicyRef = Arc<Policy>;

/// The family-specific part of a policy.
#[derive(Debug)]
pub enum Trigger {
    /// `on: exec`.
    Exec {
        /// Executable paths or globs; empty matches all.
        paths: Vec<PathGlob>,
    },
    /// `on: file`.
    File {
        /// Watched paths or globs.
        paths: Vec<PathGlob>,
        /// Changes that count; empty means all.
        changes: Vec<FileChange>,
    },
    /// `on: connect`.
    Connect(ConnectTrigger),
    /// `on: cpu`.
    Cpu {
        /// Process or host.
        scope: CpuScope,
        /// Threshold in percent.
        above: f64,
        /// How long it must hold.
        duration: Duration,
    },
}

impl Trigger {
    /// The family name, as written after `on:`.
    pub fn family(&self) -> &'static str {
        match self {
            Trigger::Exec { .. } => "exec",
            Trigger::File { .. } => "file",
            Trigger::Connect(_) => "connect",
            Trigger::Cpu { .. } => "cpu",
        }
    }
}

/// Conditions of an `on: connect` policy.
#[derive(Debug, Default)]
pub struct ConnectTrigger {
    /// Directions; empty means all.
    pub direction: Vec<Direction>,
    /// Remote networks; empty means any.
    pub remote: Vec<Cidr>,
    /// Exempted networks.
    pub except: Vec<Cidr>,
    /// Ports; empty means any.
    pub ports: Vec<PortRange>,
    /// Protocols; empty means both.
    pub protocol: Vec<Protocol>,
}

impl ConnectTrigger {
    /// Builds from a spec whose values are known to be valid.
    pub fn from_valid(on: ConnectOn) -> Option<Self> {
        Some(Self {
            direction: all_valid(on.direction)?,
            remote: all_valid(on.remote)?,
            except: all_valid(on.except)?,
            ports: all_valid(on.ports)?,
            protocol: all_valid(on.protocol)?,
        })
    }
}

impl ConnectTrigger {
    /// Whether `c` meets every condition given. An IPv4-mapped remote
    /// address is matched as the IPv4 address it stands for (the decoder
    /// already reports it so; a recorded stream may not).
    pub fn matches(&self, c: &crate::events::connect::Connect) -> bool {
        let remote = c.remote_addr.to_canonical();
        let remote_ok = self.direction_needs_remote(c)
            || self.remote.is_empty()
            || self.remote.iter().any(|n| n.0.contains(&remote));
        (self.direction.is_empty() || self.direction.contains(&c.direction))
            && remote_ok
            && !self.except.iter().any(|n| n.0.contains(&remote))
            && (self.ports.is_empty()
                || self
                    .ports
                    .iter()
                    .any(|p| (p.first..=p.last).contains(&c.service_port())))
            && (self.protocol.is_empty() || c.protocol.is_some_and(|p| self.protocol.contains(&p)))
    }

    /// A listening socket has no remote end: `remote` does not apply.
    fn direction_needs_remote(&self, c: &crate::events::connect::Connect) -> bool {
        c.direction == Direction::Listen
    }
}

/// `Some` of every value when all are valid.
pub fn all_valid<T>(items: Vec<super::checked::Checked<T>>) -> Option<Vec<T>> {
    items
        .into_iter()
        .map(super::checked::Checked::valid)
        .collect()
}

/// A compiled action.
#[derive(Debug)]
pub enum Action {
    /// Signal the process or its parent.
    Kill {
        /// Signal.
        signal: Signal,
        /// Whom.
        target: KillTarget,
    },
    /// Report the decision.
    Alert {
        /// Severity label.
        severity: Severity,
        /// Summary template.
        summary: Option<Template>,
    },
    /// Run a hook.
    Run {
        /// Program and argument templates.
        command: Vec<Template>,
        /// Time limit.
        timeout: Duration,
    },
    /// Restore a file.
    Revert {
        /// Golden source file.
        source: Option<PathBuf>,
    },
    /// Refuse a connection.
    Block,
}

impl Action {
    /// The action's name.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Kill { .. } => "kill",
            Action::Alert { .. } => "alert",
            Action::Run { .. } => "run",
            Action::Revert { .. } => "revert",
            Action::Block => "block",
        }
    }
}

/// A compiled `throttle:`.
#[derive(Clone, Copy, Debug)]
pub struct Throttle {
    /// Budget key.
    pub per: ThrottleKey,
    /// Alerts/hooks per window.
    pub max: u32,
    /// Window.
    pub every: Duration,
}

/// Compiled process conditions.
#[derive(Debug, Default)]
pub struct ProcessMatcher {
    /// Executable globs.
    pub exe: Option<GlobSet>,
    /// Command-name globs.
    pub comm: Option<GlobSet>,
    /// User ids.
    pub uid: Option<Vec<u32>>,
    /// Parent executable globs.
    pub parent_exe: Option<GlobSet>,
    /// Globs any image in the lineage (the process's own, then each
    /// ancestor's) must match, by executable or exec'd file.
    pub ancestor_exe: Option<GlobSet>,
    /// systemd unit globs (the system unit or the user unit).
    pub unit: Option<GlobSet>,
    /// In a container, or in one these globs name.
    pub container: Option<ContainerMatch>,
    /// cgroup path globs.
    pub cgroup: Option<GlobSet>,
    /// Command-line globs or positions.
    pub argv: Option<ArgvMatch>,
    /// Login user ids.
    pub login_uid: Option<Vec<u32>>,
}

impl ProcessMatcher {
    /// Whether every condition given holds for `process`.
    pub fn matches(&self, process: &ProcessContext) -> bool {
        let glob = |set: &Option<GlobSet>, value: Option<&str>| match set {
            None => true,
            Some(set) => value.is_some_and(|v| set.is_match(v)),
        };
        // A path walked inside another mount namespace is the caller's to
        // choose: no `exe` or `parent_exe` condition holds on it.
        let exe = process.exe.as_deref().filter(|_| !process.exe_foreign);
        let parent_exe = process
            .parent
            .as_ref()
            .filter(|p| !p.exe_foreign)
            .and_then(|p| p.exe.as_deref());
        glob(&self.exe, exe)
            && glob(&self.comm, Some(&process.comm))
            && self.uid.as_ref().is_none_or(|u| u.contains(&process.uid))
            && glob(&self.parent_exe, parent_exe)
            && self
                .ancestor_exe
                .as_ref()
                .is_none_or(|set| lineage_match(set, process).is_some())
            && self.identity_matches(process)
    }

    /// The conditions on where the process runs and how it was started.
    fn identity_matches(&self, process: &ProcessContext) -> bool {
        let identity = process.identity.as_deref();
        // The system unit only: a user names the units of its own
        // systemd --user tree (`user_unit`) as it likes.
        let unit = |set: &GlobSet| {
            identity.is_some_and(|i| i.unit.as_deref().is_some_and(|u| set.is_match(u)))
        };
        self.unit.as_ref().is_none_or(unit)
            && self.container.as_ref().is_none_or(|c| c.matches(process))
            && self
                .cgroup
                .as_ref()
                .is_none_or(|set| identity.is_some_and(|i| set.is_match(&i.cgroup)))
            && self.argv.as_ref().is_none_or(|a| a.matches(process))
            && self
                .login_uid
                .as_ref()
                .is_none_or(|uids| process.login_uid.is_some_and(|u| uids.contains(&u)))
    }
}

/// The first image in `process`'s lineage (itself first, then its
/// ancestors, nearest first) whose executable or exec'd file `set` matches,
/// with the path that matched.
pub fn lineage_match<'a>(
    set: &GlobSet,
    process: &'a ProcessContext,
) -> Option<(Option<&'a crate::events::Ancestor>, &'a str)> {
    let image = process.image.iter().flat_map(|image| image.paths());
    let mut own = process.exe.as_deref().into_iter().chain(image);
    if let Some(path) = own.find(|p| set.is_match(p)) {
        return Some((None, path));
    }
    process
        .ancestors
        .iter()
        .find_map(|a| a.paths().find(|p| set.is_match(p)).map(|p| (Some(a), p)))
}
