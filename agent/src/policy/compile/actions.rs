//! Actions and the templates they render: what each family may do and
//! which event fields its templates may name.
use std::path::PathBuf;

use super::DEFAULT_HOOK_TIMEOUT;
use crate::policy::{
    load::{Locator, PolicyError},
    model::{Action, all_valid},
    spec::ActionSpec,
    value::Template,
};

/// Fields every event offers to templates.
const COMMON_FIELDS: [&str; 25] = [
    "time",
    "ktime_ns",
    "kind",
    "policy",
    "policy.name",
    "policy.mode",
    "process.pid",
    "process.tid",
    "process.ppid",
    "process.uid",
    "process.gid",
    "process.comm",
    "process.exe",
    "process.argv",
    "process.cgroup_id",
    "process.cgroup",
    "process.unit",
    "process.user_unit",
    "process.container",
    "process.login_uid",
    "process.session_id",
    "process.start_ktime_ns",
    "process.parent",
    "process.image",
    "process.ancestors",
];

/// Fields each family adds.
fn family_fields(family: &str) -> &'static [&'static str] {
    match family {
        "exec" => &[
            "exec.filename",
            "exec.argv",
            "exec.argv_truncated",
            "exec.dev",
            "exec.ino",
            "exec.killed",
            "exec.script",
            "exec.aliases",
        ],
        "file" => &[
            "file.path",
            "file.change",
            "file.changes",
            "file.dev",
            "file.ino",
            "file.baseline",
            "file.after",
            "file.accepted",
        ],
        "connect" => &[
            "connect.direction",
            "connect.protocol",
            "connect.local_addr",
            "connect.local_port",
            "connect.remote_addr",
            "connect.remote_port",
            "connect.blocked",
            "connect.datagram",
            "connect.suppressed",
        ],
        "cpu" => &[
            "cpu.scope",
            "cpu.percent",
            "cpu.host_percent",
            "cpu.top",
            "cpu.state",
        ],
        _ => &[],
    }
}

/// Actions each family can carry out.
fn family_actions(family: &str) -> &'static [&'static str] {
    match family {
        "exec" => &["kill", "alert", "run"],
        "file" => &["kill", "alert", "run", "revert"],
        "connect" => &["kill", "alert", "run", "block"],
        "cpu" => &["kill", "alert", "run"],
        _ => &[],
    }
}

pub(super) fn action(
    spec: ActionSpec,
    family: Option<&str>,
    locator: &Locator,
    file: &std::path::Path,
    errors: &mut Vec<PolicyError>,
) -> Option<Action> {
    let name = spec.name();
    let at = locator.find(Some("do:"), name);
    let mut err = |message: String| {
        errors.push(PolicyError {
            file: file.to_owned(),
            position: Some(at),
            message,
        })
    };
    if let Some(family) = family
        && !family_actions(family).contains(&name)
    {
        err(format!(
            "action `{name}` is not available for `{family}` policies; expected one of {}",
            family_actions(family).join(", ")
        ));
        return None;
    }
    Some(match spec {
        ActionSpec::Kill(k) => Action::Kill {
            signal: k.signal.valid()?.0,
            target: k.target.valid()?,
        },
        ActionSpec::Alert(a) => Action::Alert {
            severity: a.severity.valid()?,
            summary: match a.summary {
                Some(t) => Some(t.valid()?),
                None => None,
            },
        },
        ActionSpec::Run(r) => {
            let command = all_valid(r.command)?;
            let timeout = match r.timeout {
                Some(t) => t.valid()?.0,
                None => DEFAULT_HOOK_TIMEOUT,
            };
            match command.first() {
                None => err("`run` needs a `command` with at least the program".into()),
                Some(program) => {
                    let literal = program.fields().next().is_none();
                    if !literal || !program.source.starts_with('/') {
                        err(format!(
                            "hook program {:?} must be an absolute path without placeholders",
                            program.source
                        ));
                    } else if !std::path::Path::new(&program.source).is_file() {
                        err(format!("hook program {} does not exist", program.source));
                    }
                }
            }
            Action::Run { command, timeout }
        }
        ActionSpec::Revert(r) => Action::Revert {
            source: match r.source {
                Some(s) => Some(PathBuf::from(s.valid()?.as_str())),
                None => None,
            },
        },
        ActionSpec::Block(_) => Action::Block,
    })
}

pub(super) fn check_templates(
    family: &str,
    actions: &[Action],
    locator: &Locator,
    file: &std::path::Path,
    errors: &mut Vec<PolicyError>,
) {
    let known = |field: &str| {
        COMMON_FIELDS
            .iter()
            .chain(family_fields(family))
            .any(|k| field == *k || field.starts_with(&format!("{k}.")))
    };
    let templates = actions.iter().flat_map(|a| -> Vec<&Template> {
        match a {
            Action::Alert {
                summary: Some(t), ..
            } => vec![t],
            Action::Run { command, .. } => command.iter().collect(),
            _ => Vec::new(),
        }
    });
    for template in templates {
        for field in template.fields() {
            if !known(field) {
                let mut fields: Vec<&str> = COMMON_FIELDS.to_vec();
                fields.extend(family_fields(family));
                errors.push(PolicyError {
                    file: file.to_owned(),
                    position: Some(locator.find(None, &format!("{{{field}}}"))),
                    message: format!(
                        "unknown field {{{field}}} for `{family}` events; expected one of {}",
                        fields.join(", ")
                    ),
                });
            }
        }
    }
}
