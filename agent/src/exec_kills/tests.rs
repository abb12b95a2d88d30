//! Which policies the kernel enforces, fuses, and the names the probe hashes.
use std::path::Path;

use super::*;
use crate::policy::{compile, load};

fn set(text: &str) -> Arc<PolicySet> {
    let (sources, mut errors) = load::parse_source(Path::new("t.yaml"), text);
    let policies = compile::compile_all(sources, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    Arc::new(PolicySet::new(policies))
}

fn id(ino: u64) -> FileId {
    FileId { dev: 1, ino }
}

fn targets(set: &Arc<PolicySet>, entries: &[(&str, &[u64])]) -> Notice {
    Notice::Targets {
        set: set.clone(),
        policies: entries
            .iter()
            .map(|(p, inos)| {
                let covered = Covered {
                    files: inos.iter().map(|&i| id(i)).collect(),
                    names: [NameRule {
                        dir: id(100),
                        name: format!("{p}-tool").into_bytes(),
                        prefix: true,
                    }]
                    .into(),
                };
                (p.to_string(), covered)
            })
            .collect(),
    }
}

#[test]
fn only_plain_enforcing_sigkill_exec_policies_are_kernel_enforced() {
    let set = set(r#"
name: plain
mode: enforce
on: { exec: { paths: ["/usr/bin/nc*"] } }
do: [kill, alert]
---
name: monitor
on: { exec: { paths: ["/usr/bin/nc*"] } }
do: [kill]
---
name: conditional
mode: enforce
on: { exec: { paths: ["/usr/bin/nc*"] } }
unless: { process: { parent_exe: ["/usr/sbin/sshd"] } }
do: [kill]
---
name: term
mode: enforce
on: { exec: { paths: ["/usr/bin/nc*"] } }
do: [{ kill: { signal: TERM } }]
---
name: parent
mode: enforce
on: { exec: { paths: ["/usr/bin/nc*"] } }
do: [{ kill: { target: parent } }]
---
name: everything
mode: enforce
on: { exec: {} }
do: [kill]
"#);
    let enforced: Vec<&str> = set
        .policies()
        .iter()
        .filter(|p| kernel_enforced(p))
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(enforced, ["plain"]);
}

#[test]
fn a_blown_fuse_disarms_only_its_policy_until_the_next_set() {
    let first = set("name: a\non: { exec: {} }\ndo: [alert]\n");
    let mut table = ExecKillTable::new(None, None);
    table.apply(targets(&first, &[("a", &[1, 2]), ("b", &[2, 3])]));
    assert_eq!(table.armed().len(), 3);

    table.apply(Notice::FuseBlown {
        set: first.clone(),
        policy: "b".into(),
    });
    let armed: HashSet<FileId> = [id(1), id(2)].into();
    assert_eq!(table.armed(), armed, "2 stays: policy a still kills it");
    assert_eq!(table.armed_names(), 1, "b's names went with it");

    table.apply(targets(&first, &[("a", &[1, 2, 4]), ("b", &[2, 3, 5])]));
    assert!(
        !table.armed().contains(&id(5)),
        "new files of a blown policy stay unarmed"
    );

    let second = set("name: a\non: { exec: {} }\ndo: [alert]\n");
    table.apply(targets(&second, &[("a", &[1]), ("b", &[3])]));
    let armed: HashSet<FileId> = [id(1), id(3)].into();
    assert_eq!(table.armed(), armed, "a reload re-arms every fuse");
    table.apply(Notice::FuseBlown {
        set: first,
        policy: "a".into(),
    });
    assert_eq!(
        table.armed(),
        armed,
        "a notice about the old set is ignored"
    );
    table.apply(Notice::FuseBlown {
        set: second,
        policy: "a".into(),
    });
    assert_eq!(table.armed(), HashSet::from([id(3)]));
}

#[test]
fn names_hash_as_the_probe_does() {
    let rule = NameRule {
        dir: id(7),
        name: b"nc".to_vec(),
        prefix: true,
    };
    let (key, bits) = name_entry(&rule).unwrap();
    assert_eq!(bits, exec_kill::PREFIX);
    assert_eq!(key.len, 2);
    assert_eq!(key.hash, reflex_wire::file::name_hash(b"nc"));
    let long = NameRule {
        name: vec![b'x'; EXEC_NAME_MAX],
        ..rule
    };
    assert!(name_entry(&long).is_none(), "too long for the probe");
}

#[test]
fn of_queued_targets_in_a_row_only_the_newest_is_applied() {
    let set = Arc::new(PolicySet::default());
    let targets = |n: usize| Notice::Targets {
        set: set.clone(),
        policies: BTreeMap::from([(format!("p{n}"), Covered::default())]),
    };
    let blown = Notice::FuseBlown {
        set: set.clone(),
        policy: "p1".into(),
    };
    let kept: Vec<String> = newest_targets(vec![targets(1), blown, targets(2), targets(3)])
        .map(|n| match n {
            Notice::Targets { policies, .. } => policies.keys().next().unwrap().clone(),
            Notice::FuseBlown { policy, .. } => format!("blown {policy}"),
        })
        .collect();
    assert_eq!(kept, ["p1", "blown p1", "p3"]);
}
