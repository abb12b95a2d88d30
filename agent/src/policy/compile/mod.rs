//! All validation that spans fields or policies, then the compiled form.
use std::{collections::HashMap, path::PathBuf, time::Duration};

use super::{
    accept,
    checked::Position,
    identity::{ArgvMatch, ContainerMatch, ContainerSpec},
    load::{Locator, PolicyError, SourcePolicy},
    model::{Action, ConnectTrigger, Policy, ProcessMatcher, Throttle, Trigger, all_valid},
    spec::{self, ConditionSpec, CpuScope, OnSpec, PolicySpec, ThrottleKey},
    value::{NameGlob, PathGlob, glob_set},
};

mod actions;

use actions::{action, check_templates};

/// Default time limit of a `run` hook.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Compiles every parsed policy; problems are appended to `errors`. Names
/// must be unique across all of them.
pub fn compile_all(sources: Vec<SourcePolicy>, errors: &mut Vec<PolicyError>) -> Vec<Policy> {
    let mut seen: HashMap<String, (PathBuf, Position)> = HashMap::new();
    let mut out = Vec::new();
    for source in sources {
        let mut problems = Vec::new();
        let compiled = compile_one(source, &mut problems, &mut seen);
        let failed = !problems.is_empty();
        errors.extend(problems);
        if let Some(policy) = compiled.filter(|_| !failed) {
            out.push(policy);
        }
    }
    out
}

fn compile_one(
    source: SourcePolicy,
    errors: &mut Vec<PolicyError>,
    seen: &mut HashMap<String, (PathBuf, Position)>,
) -> Option<Policy> {
    let SourcePolicy {
        spec,
        file,
        locator,
    } = source;
    let err = |errors: &mut Vec<PolicyError>, position: Position, message: String| {
        errors.push(PolicyError {
            file: file.clone(),
            position: Some(position),
            message,
        })
    };
    let PolicySpec {
        name,
        description,
        mode,
        on,
        when,
        unless,
        actions,
        throttle,
        labels,
        accept_from,
        on_drift,
        evidence,
    } = spec;

    let name = name.valid()?;
    let name_at = locator.find(Some("name:"), &name);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        err(
            errors,
            name_at,
            format!("policy name {name:?} must be letters, digits, '-', '_' or '.'"),
        );
    }
    if let Some((other_file, other_at)) = seen.get(&name) {
        err(
            errors,
            name_at,
            format!(
                "duplicate policy name {name:?}; first defined at {}:{other_at}",
                other_file.display()
            ),
        );
    } else {
        seen.insert(name.clone(), (file.clone(), name_at));
    }

    let trigger = trigger(on, &locator, &file, errors);
    let family = trigger.as_ref().map(Trigger::family);
    let when = condition(when, &locator, "when:", &file, errors);
    let unless = condition(unless, &locator, "unless:", &file, errors);

    if actions.is_empty() {
        err(
            errors,
            locator.find(None, "do:"),
            "`do` is empty; expected at least one action".into(),
        );
    }
    let actions: Option<Vec<Action>> = actions
        .into_iter()
        .map(|a| action(a, family, &locator, &file, errors))
        .collect();

    let throttle = throttle.and_then(|t| {
        let (per, max, every) = (t.per.valid()?, t.max.valid()?, t.every.valid()?);
        if max == 0 {
            err(
                errors,
                locator.find(Some("throttle:"), "max"),
                "throttle `max` must be at least 1".into(),
            );
        }
        let fits = match per {
            ThrottleKey::File => family == Some("file"),
            ThrottleKey::Remote => family == Some("connect"),
            ThrottleKey::Policy | ThrottleKey::Process => true,
        };
        if !fits {
            err(
                errors,
                locator.find(Some("throttle:"), "per"),
                format!(
                    "throttle `per: {}` needs a {} policy",
                    if per == ThrottleKey::File {
                        "file"
                    } else {
                        "remote"
                    },
                    if per == ThrottleKey::File {
                        "file"
                    } else {
                        "connect"
                    }
                ),
            );
        }
        Some(Throttle {
            per,
            max,
            every: every.0,
        })
    });

    if let (
        Some(Trigger::Cpu {
            scope: CpuScope::Host,
            ..
        }),
        Some(actions),
    ) = (&trigger, &actions)
        && actions.iter().any(|a| matches!(a, Action::Kill { .. }))
    {
        err(
            errors,
            locator.find(Some("do:"), "kill"),
            "`kill` needs a process; `cpu` policies with `scope: host` cannot kill (use `run`)"
                .into(),
        );
    }

    if let (Some(Trigger::Connect(t)), Some(actions)) = (&trigger, &actions)
        && actions.iter().any(|a| matches!(a, Action::Block))
    {
        if !t.direction.is_empty() && !t.direction.contains(&spec::Direction::Outbound) {
            err(
                errors,
                locator.find(Some("do:"), "block"),
                "`block` refuses outbound connects; add `outbound` to `direction`".into(),
            );
        }
        if when.as_ref().is_some_and(Option::is_some)
            || unless.as_ref().is_some_and(Option::is_some)
        {
            err(
                errors,
                locator.find(Some("do:"), "block"),
                "`block` is decided in the kernel, which cannot test `when`/`unless` process conditions; use separate policies".into(),
            );
        }
    }

    if let (Some(family), Some(actions)) = (family, &actions) {
        check_templates(family, actions, &locator, &file, errors);
    }
    let answers = accept::compile(
        accept_from,
        on_drift,
        evidence,
        &accept::Context {
            family,
            actions: actions.as_deref(),
            locator: &locator,
            file: &file,
        },
        errors,
    );

    Some(Policy {
        name,
        description: description.valid().unwrap_or_default(),
        mode: mode.valid()?,
        origin: (file.clone(), locator.start()),
        trigger: trigger?,
        when: when?,
        unless: unless?,
        actions: actions?,
        throttle,
        labels,
        answers: answers?,
    })
}

fn trigger(
    on: OnSpec,
    locator: &Locator,
    file: &std::path::Path,
    errors: &mut Vec<PolicyError>,
) -> Option<Trigger> {
    match on {
        OnSpec::Exec(exec) => Some(Trigger::Exec {
            paths: all_valid(exec.paths)?,
        }),
        OnSpec::File(f) => {
            let paths = all_valid(f.paths)?;
            if paths.is_empty() {
                errors.push(PolicyError {
                    file: file.to_owned(),
                    position: Some(locator.find(Some("file:"), "paths")),
                    message: "`file` needs at least one path in `paths`".into(),
                });
            }
            Some(Trigger::File {
                paths,
                changes: all_valid(f.events)?,
            })
        }
        OnSpec::Connect(c) => ConnectTrigger::from_valid(c).map(Trigger::Connect),
        OnSpec::Cpu(c) => Some(Trigger::Cpu {
            scope: c.scope.valid()?,
            above: c.above.valid()?.0,
            duration: c.duration.valid()?.0,
        }),
    }
}

/// Compiles `when`, `unless` or `accept_from`'s process conditions;
/// `anchor` places the error of an empty one.
pub(super) fn condition(
    spec: Option<ConditionSpec>,
    locator: &Locator,
    anchor: &str,
    file: &std::path::Path,
    errors: &mut Vec<PolicyError>,
) -> Option<Option<ProcessMatcher>> {
    let Some(spec) = spec else {
        return Some(None);
    };
    let process = spec.process;
    let exe = all_valid(process.exe)?;
    let comm = all_valid(process.comm)?;
    let uid = all_valid(process.uid)?;
    let parent_exe = all_valid(process.parent_exe)?;
    let ancestor_exe = all_valid(process.ancestor_exe)?;
    let unit = all_valid(process.unit);
    let cgroup = all_valid(process.cgroup);
    let login_uid = all_valid(process.login_uid);
    if matches!(process.container, Some(ContainerSpec::Mapping)) {
        errors.push(PolicyError {
            file: file.to_owned(),
            position: Some(locator.find(Some(anchor), "container:")),
            message: format!(
                "{}.process.container: found a mapping, expected {}",
                anchor.trim_end_matches(':'),
                ContainerMatch::EXPECTED
            ),
        });
    }
    let container = process.container.map(ContainerMatch::compile);
    let argv = process.argv.map(ArgvMatch::compile);
    let (unit, cgroup, login_uid) = (unit?, cgroup?, login_uid?);
    let container = container.map_or(Some(None), |c| c)?;
    let argv = argv.map_or(Some(None), |a| a)?;
    if exe.is_empty()
        && comm.is_empty()
        && uid.is_empty()
        && parent_exe.is_empty()
        && ancestor_exe.is_empty()
        && unit.is_empty()
        && cgroup.is_empty()
        && login_uid.is_empty()
        && container.is_none()
        && argv.is_none()
    {
        errors.push(PolicyError {
            file: file.to_owned(),
            position: Some(locator.find(None, anchor)),
            message: format!(
                "`{}` has no condition; expected one of exe, comm, uid, parent_exe, ancestor_exe, unit, container, cgroup, argv, login_uid",
                anchor.trim_end_matches(':')
            ),
        });
    }
    Some(Some(ProcessMatcher {
        exe: glob_set(exe.iter().map(PathGlob::glob)),
        comm: glob_set(comm.iter().map(NameGlob::glob)),
        uid: (!uid.is_empty()).then_some(uid),
        parent_exe: glob_set(parent_exe.iter().map(PathGlob::glob)),
        ancestor_exe: glob_set(ancestor_exe.iter().map(PathGlob::glob)),
        unit: glob_set(unit.iter().map(NameGlob::glob)),
        container,
        cgroup: glob_set(cgroup.iter().map(PathGlob::glob)),
        argv,
        login_uid: (!login_uid.is_empty()).then_some(login_uid),
    }))
}
