//! Evaluation: which policies an event matches. It cannot fail.
use std::sync::Arc;

use super::{
    index::PathIndex,
    model::{Policy, PolicyRef, Trigger},
};
use crate::events::{Body, Record};

/// A compiled, indexed set of policies. Swapped whole on reload.
#[derive(Debug, Default)]
pub struct PolicySet {
    policies: Vec<PolicyRef>,
    exec: PathIndex,
    file: PathIndex,
}

impl PolicySet {
    /// Indexes `policies` (already validated, names unique).
    pub fn new(policies: Vec<Policy>) -> Self {
        let exec = PathIndex::exec(&policies);
        let file = PathIndex::file(&policies);
        Self {
            policies: policies.into_iter().map(Arc::new).collect(),
            exec,
            file,
        }
    }

    /// Every policy, in load order.
    pub fn policies(&self) -> &[PolicyRef] {
        &self.policies
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policies `record` matches, in load order.
    pub fn evaluate(&self, record: &Record) -> Vec<PolicyRef> {
        let candidates = match &record.body {
            // What ran: the executable the kernel loaded, the policy paths
            // that are the same file, and the script an interpreter runs.
            Body::Exec(exec) => {
                let loaded = record.process.exe.as_deref().unwrap_or(&exec.filename);
                let mut candidates = self.exec.candidates(loaded);
                for path in exec.aliases.iter().chain(&exec.script) {
                    candidates.extend(self.exec.candidates(path));
                }
                candidates.sort_unstable();
                candidates.dedup();
                candidates
            }
            Body::File(file) => match &file.path {
                Some(path) => self.file.candidates(path),
                None => Vec::new(),
            },
            Body::Exit(_) | Body::Fork(_) => Vec::new(),
            Body::Connect(connect) => (0..self.policies.len())
                .filter(|&i| match &self.policies[i].trigger {
                    Trigger::Connect(t) => t.matches(connect),
                    _ => false,
                })
                .collect(),
            // The CPU monitor already decided which policy crossed its threshold.
            Body::Cpu(cpu) => {
                return self
                    .policies
                    .iter()
                    .filter(|p| p.name == cpu.policy && matches!(p.trigger, Trigger::Cpu { .. }))
                    .cloned()
                    .collect();
            }
        };
        candidates
            .into_iter()
            .map(|i| &self.policies[i])
            .filter(|p| change_matches(p, &record.body))
            .filter(|p| {
                p.when.as_ref().is_none_or(|m| m.matches(&record.process))
                    && !p
                        .unless
                        .as_ref()
                        .is_some_and(|m| m.matches(&record.process))
            })
            .cloned()
            .collect()
    }
}

/// Whether a file policy's `events` list admits the event's changes.
fn change_matches(policy: &Policy, body: &Body) -> bool {
    match (&policy.trigger, body) {
        (Trigger::File { changes, .. }, Body::File(file)) => {
            changes.is_empty() || file.changes.iter().any(|c| changes.contains(c))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::{Body, Exec, Kind, ParentContext, ProcessContext},
        policy::compile_valid,
    };

    fn set(text: &str) -> PolicySet {
        PolicySet::new(compile_valid(text))
    }

    fn exec(exe: &str, parent: &str, uid: u32) -> Record {
        Record {
            time: String::new(),
            ktime_ns: 1,
            kind: Kind::Exec,
            process: ProcessContext {
                pid: 10,
                uid,
                comm: exe
                    .rsplit('/')
                    .next()
                    .unwrap_or(exe)
                    .chars()
                    .take(15)
                    .collect(),
                exe: Some(exe.into()),
                parent: Some(ParentContext {
                    pid: 1,
                    exe: Some(parent.into()),
                    exe_foreign: false,
                    comm: None,
                }),
                ..ProcessContext::default()
            },
            body: Body::Exec(Exec {
                filename: exe.into(),
                argv: vec![],
                argv_truncated: false,
                ..Exec::default()
            }),
        }
    }

    fn names(set: &PolicySet, record: &Record) -> Vec<String> {
        set.evaluate(record)
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    const POLICIES: &str = r#"
name: nc
on: { exec: { paths: ["/usr/bin/nc*"] } }
unless: { process: { parent_exe: ["/usr/sbin/sshd"] } }
do: [alert]
---
name: exact
on: { exec: { paths: ["/usr/bin/id"] } }
when: { process: { uid: [1000] } }
do: [alert]
---
name: everything-by-www
on: { exec: {} }
when: { process: { comm: ["php*"] } }
do: [alert]
"#;

    #[test]
    fn a_parent_path_from_another_mount_namespace_does_not_exempt() {
        let set = set(POLICIES);
        let mut record = exec("/usr/bin/ncat", "/usr/sbin/sshd", 0);
        if let Some(parent) = record.process.parent.as_mut() {
            parent.exe_foreign = true;
        }
        assert_eq!(
            names(&set, &record),
            ["nc"],
            "unless parent_exe does not hold"
        );
    }

    #[test]
    fn globs_literals_and_conditions() {
        let set = set(POLICIES);
        assert_eq!(names(&set, &exec("/usr/bin/ncat", "/bin/bash", 0)), ["nc"]);
        assert!(names(&set, &exec("/usr/bin/ncat", "/usr/sbin/sshd", 0)).is_empty());
        assert!(
            names(&set, &exec("/usr/bin/nc/x", "/bin/bash", 0)).is_empty(),
            "* stays in one component"
        );
        assert_eq!(
            names(&set, &exec("/usr/bin/id", "/bin/bash", 1000)),
            ["exact"]
        );
        assert!(names(&set, &exec("/usr/bin/id", "/bin/bash", 0)).is_empty());
        assert_eq!(
            names(&set, &exec("/usr/bin/php8.2", "/bin/bash", 33)),
            ["everything-by-www"]
        );
    }

    #[test]
    fn aliases_and_scripts_match_like_the_executable() {
        let set = set(POLICIES);
        let mut hardlink = exec("/tmp/innocent", "/bin/bash", 0);
        assert!(names(&set, &hardlink).is_empty());
        if let Body::Exec(e) = &mut hardlink.body {
            e.aliases = vec!["/usr/bin/ncat".into()];
        }
        assert_eq!(names(&set, &hardlink), ["nc"], "same file as a named one");

        let mut script = exec("/usr/bin/dash", "/bin/bash", 0);
        if let Body::Exec(e) = &mut script.body {
            e.script = Some("/usr/bin/nc-wrapper".into());
        }
        assert_eq!(names(&set, &script), ["nc"], "the script counts too");
    }

    #[test]
    fn policies_that_cannot_match_are_not_even_candidates() {
        let mut text = String::new();
        for i in 0..10_000 {
            text.push_str(&format!(
                "name: p{i}\non: {{ exec: {{ paths: [\"/opt/app{i}/bin/*\", \"/srv/tool{i}\"] }} }}\ndo: [alert]\n---\n"
            ));
        }
        let set = set(&text);
        assert_eq!(set.len(), 10_000);
        assert!(set.exec.candidates("/usr/bin/ls").is_empty());
        assert_eq!(set.exec.candidates("/opt/app42/bin/run"), [42]);
        assert_eq!(set.exec.candidates("/srv/tool9999"), [9999]);
    }
}
