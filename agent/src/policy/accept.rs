//! What a `file` policy with `revert` does about change it should keep:
//! `accept_from` (whose changes become the baseline), `on_drift` (what a
//! change found at start-up becomes) and `evidence` (what a revert keeps of
//! the content it rejects). The settler decides acceptance; the planner and
//! the revert action read `on_drift` and `evidence`.
use std::path::Path;

use serde::Deserialize;

use super::{
    checked::Checked,
    load::{Locator, PolicyError},
    model::{Action, ProcessMatcher, lineage_match},
    spec::ProcessCondition,
    value::Scalar,
};
use crate::{events::ProcessContext, fsio};

/// `accept_from:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptSpec {
    /// Conditions the writer must meet, as in `when`.
    pub process: ProcessCondition,
    /// Content hashes the matched executable must have (any of them).
    #[serde(default)]
    pub sha256: Vec<Checked<Sha256>>,
}

/// What a file found changed at start-up becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDrift {
    /// Put back as the baseline says.
    #[default]
    Revert,
    /// Becomes the new baseline.
    Accept,
    /// Reported and left as found.
    Report,
}

/// What a revert keeps of the content it rejects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvidenceMode {
    /// The content (bounded) under the state directory, and a short
    /// unified diff against the baseline in the alert.
    #[default]
    Diff,
    /// Only its hash and size: for secrets.
    HashOnly,
}

crate::scalar_enum!(OnDrift, "one of revert, accept, report", {
    "revert" => OnDrift::Revert, "accept" => OnDrift::Accept, "report" => OnDrift::Report,
});
crate::scalar_enum!(EvidenceMode, "`diff` or `hash-only`", {
    "diff" => EvidenceMode::Diff, "hash-only" => EvidenceMode::HashOnly,
});

/// A SHA-256 as 64 hex digits (stored lowercase).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sha256(pub String);

impl Scalar for Sha256 {
    const EXPECTED: &'static str = "a SHA-256 as 64 hex digits";

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("bad sha256 {text:?}"));
        }
        Ok(Self(text.to_ascii_lowercase()))
    }
}

/// A compiled `accept_from`.
#[derive(Debug)]
pub struct AcceptFrom {
    /// The writer's conditions.
    pub process: ProcessMatcher,
    /// Hashes the matched executable may have; empty: not checked.
    pub sha256: Vec<String>,
}

/// Why a writer's change is authorised: the image that matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    /// Process id of the image that made the writer authorised (the writer
    /// itself or one of its ancestors).
    pub pid: u32,
    /// The path that matched (`exe` or the exec'd file).
    pub path: Option<String>,
}

impl AcceptFrom {
    /// Whether `writer` may change the policy's files, and why.
    pub fn authorises(&self, writer: &ProcessContext) -> Option<Authority> {
        if !self.process.matches(writer) {
            return None;
        }
        let (pid, path) = match (&self.process.ancestor_exe, &self.process.exe) {
            (Some(set), _) => {
                let (image, path) = lineage_match(set, writer)?;
                (image.map_or(writer.pid, |a| a.pid), Some(path.to_string()))
            }
            (None, Some(_)) => (writer.pid, writer.exe.clone()),
            (None, None) => (writer.pid, None),
        };
        if !self.sha256.is_empty() {
            // The file at that path now: an upgrade of the tool changes it,
            // and the policy must follow.
            let hash = path
                .as_deref()
                .and_then(|p| fsio::content_hash(Path::new(p)).ok())?;
            if !self.sha256.contains(&hash) {
                tracing::warn!(
                    path,
                    sha256 = hash,
                    "a writer's executable matched accept_from by path but not by sha256"
                );
                return None;
            }
        }
        Some(Authority { pid, path })
    }
}

/// The file policies' answers to change, compiled.
#[derive(Debug, Default)]
pub struct FileAnswers {
    /// `accept_from`.
    pub accept_from: Option<AcceptFrom>,
    /// `on_drift`.
    pub on_drift: OnDrift,
    /// `evidence`.
    pub evidence: EvidenceMode,
}

/// What [`compile`] checks a policy against.
pub struct Context<'a> {
    /// The policy's family, when it is valid.
    pub family: Option<&'a str>,
    /// Its actions, when they are valid.
    pub actions: Option<&'a [Action]>,
    /// Finds places in the document.
    pub locator: &'a Locator,
    /// The file.
    pub file: &'a Path,
}

/// Checks and compiles `accept_from`, `on_drift` and `evidence`; `None`
/// when a value was invalid (its error is recorded).
pub fn compile(
    accept: Option<AcceptSpec>,
    on_drift: Checked<OnDrift>,
    evidence: Checked<EvidenceMode>,
    cx: &Context<'_>,
    errors: &mut Vec<PolicyError>,
) -> Option<FileAnswers> {
    let given = [
        ("accept_from:", accept.is_some()),
        ("on_drift:", on_drift != Checked::Valid(OnDrift::Revert)),
        ("evidence:", evidence != Checked::Valid(EvidenceMode::Diff)),
    ];
    let mut err = |anchor: &str, message: String| {
        errors.push(PolicyError {
            file: cx.file.to_owned(),
            position: Some(cx.locator.find(None, anchor)),
            message,
        })
    };
    let revert_source = cx.actions.and_then(|actions| {
        actions.iter().find_map(|a| match a {
            Action::Revert { source } => Some(source.is_some()),
            _ => None,
        })
    });
    for (anchor, present) in given {
        let field = anchor.trim_end_matches(':');
        if !present {
            continue;
        }
        if cx.family.is_some_and(|f| f != "file") {
            err(anchor, format!("`{field}` is for `file` policies"));
        } else if cx.actions.is_some() && revert_source.is_none() {
            err(
                anchor,
                format!(
                    "`{field}` needs a `revert` action: it is about the baseline a revert restores{}",
                    if field == "accept_from" {
                        " (to leave a writer's changes alone without keeping them, use `unless`)"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    let mut answers = FileAnswers {
        accept_from: None,
        on_drift: on_drift.valid()?,
        evidence: evidence.valid()?,
    };
    let Some(spec) = accept else {
        return Some(answers);
    };
    if revert_source == Some(true) {
        err(
            "accept_from:",
            "`accept_from` cannot be combined with `revert: { source: ... }`: the golden file is the truth, and an accepted change would not be".into(),
        );
    }
    if cx
        .actions
        .is_some_and(|a| a.iter().any(|a| matches!(a, Action::Kill { .. })))
    {
        err(
            "accept_from:",
            "`accept_from` cannot be combined with `kill`: the kernel kills a writer in its open, before its ancestry can be looked at".into(),
        );
    }
    let process = super::compile::condition(
        Some(super::spec::ConditionSpec {
            process: spec.process,
        }),
        cx.locator,
        "accept_from:",
        cx.file,
        errors,
    )?
    .unwrap_or_default();
    let sha256: Vec<String> = super::model::all_valid(spec.sha256)?
        .into_iter()
        .map(|s| s.0)
        .collect();
    if !sha256.is_empty() && process.ancestor_exe.is_none() && process.exe.is_none() {
        errors.push(PolicyError {
            file: cx.file.to_owned(),
            position: Some(cx.locator.find(Some("accept_from:"), "sha256")),
            message: "`sha256` checks the executable that `ancestor_exe` or `exe` matched; give one of them".into(),
        });
    }
    answers.accept_from = Some(AcceptFrom { process, sha256 });
    Some(answers)
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use crate::{
        events::{Ancestor, ProcessContext},
        policy::{compile, load},
    };

    fn accept_from(yaml: &str) -> super::AcceptFrom {
        let text = format!(
            "name: p\nmode: enforce\non: {{ file: {{ paths: [\"/etc/a\"] }} }}\naccept_from: {yaml}\ndo: [revert]\n"
        );
        let (sources, mut errors) = load::parse_source(Path::new("t.yaml"), &text);
        let mut policies = compile::compile_all(sources, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        policies.remove(0).answers.accept_from.expect("accept_from")
    }

    fn writer(exe: &str, ancestors: &[(&str, &str)]) -> ProcessContext {
        ProcessContext {
            pid: 100,
            uid: 0,
            exe: Some(exe.into()),
            ancestors: ancestors
                .iter()
                .enumerate()
                .map(|(i, (exe, filename))| Ancestor {
                    pid: 99 - i as u32,
                    start_ktime_ns: None,
                    exe: Some(exe.to_string()),
                    filename: Some(filename.to_string()),
                })
                .collect::<Vec<_>>()
                .into(),
            image: None,
            ..ProcessContext::default()
        }
    }

    #[test]
    fn the_script_an_interpreter_runs_and_the_nearest_match_authorise() {
        let rule = accept_from("{ process: { ancestor_exe: [\"/usr/bin/salt-call\"] } }");
        let w = writer(
            "/usr/bin/cp",
            &[
                ("/usr/bin/dash", "/bin/sh"),
                ("/usr/bin/python3.11", "/usr/bin/salt-call"),
            ],
        );
        let authority = rule.authorises(&w).expect("authorised");
        assert_eq!(
            (authority.pid, authority.path.as_deref()),
            (98, Some("/usr/bin/salt-call"))
        );
        let impostor = writer("/usr/bin/cp", &[("/usr/bin/python3.11", "/tmp/salt-call")]);
        assert!(rule.authorises(&impostor).is_none());
        let mut empty = writer("/usr/bin/cp", &[]);
        empty.ancestors = Arc::from([]);
        assert!(
            rule.authorises(&empty).is_none(),
            "no lineage, no authority"
        );
    }

    #[test]
    fn sha256_checks_the_matched_file() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let hash = crate::fsio::content_hash(&tool).unwrap();
        let glob = tool.display().to_string();
        let good = accept_from(&format!(
            "{{ process: {{ ancestor_exe: [\"{glob}\"] }}, sha256: [\"{hash}\"] }}"
        ));
        let w = writer("/usr/bin/cp", &[("/usr/bin/dash", glob.as_str())]);
        assert!(good.authorises(&w).is_some());
        std::fs::write(&tool, "#!/bin/sh\necho changed\n").unwrap();
        assert!(
            good.authorises(&w).is_none(),
            "a different content is not authorised"
        );
    }
}
