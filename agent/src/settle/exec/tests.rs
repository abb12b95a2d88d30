//! Expansion, aliases, scripts and what the exec kill table is told.
use super::*;
use crate::{
    events::{Exec, Kind, ProcessContext},
    policy::{compile, load},
};

fn set(text: &str) -> Arc<PolicySet> {
    let (sources, mut errors) = load::parse_source(Path::new("t.yaml"), text);
    let policies = compile::compile_all(sources, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    Arc::new(PolicySet::new(policies))
}

fn exec_record(pid: u32, exe: &Path, filename: &str) -> Record {
    let id = identity(exe).expect("exe exists");
    Record {
        time: String::new(),
        ktime_ns: 1,
        kind: Kind::Exec,
        process: ProcessContext {
            pid,
            exe: Some(exe.to_string_lossy().into_owned()),
            ..ProcessContext::default()
        },
        body: Body::Exec(Exec {
            filename: filename.into(),
            dev: id.dev,
            ino: id.ino,
            ..Exec::default()
        }),
    }
}

/// A watch configured by `set` that tells a kill table, and what it tells.
fn told(set: Arc<PolicySet>) -> (ExecWatch, mpsc::UnboundedReceiver<Notice>) {
    let mut watch = ExecWatch::new();
    let (tx, rx) = mpsc::unbounded_channel();
    watch.tell(tx);
    watch.configure(set);
    (watch, rx)
}

fn targets(rx: &mut mpsc::UnboundedReceiver<Notice>) -> BTreeMap<String, HashSet<FileId>> {
    covered(rx)
        .into_iter()
        .map(|(policy, c)| (policy, c.files))
        .collect()
}

fn covered(rx: &mut mpsc::UnboundedReceiver<Notice>) -> BTreeMap<String, Covered> {
    let mut last = None;
    while let Ok(Notice::Targets { policies, .. }) = rx.try_recv() {
        last = Some(policies);
    }
    last.expect("targets were sent")
}

#[test]
fn globs_expand_to_identities_and_hardlinks_are_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    fs::write(bin.join("ncx"), b"x").unwrap();
    fs::write(bin.join("other"), b"y").unwrap();
    let elsewhere = dir.path().join("hidden");
    fs::hard_link(bin.join("ncx"), &elsewhere).unwrap();
    let set = set(&format!(
        "name: k\nmode: enforce\non: {{ exec: {{ paths: [\"{}/nc*\"] }} }}\ndo: [kill]\n",
        bin.display()
    ));
    let (mut watch, mut rx) = told(set);
    let ncx = identity(&bin.join("ncx")).unwrap();
    assert_eq!(targets(&mut rx)["k"], HashSet::from([ncx]));

    let mut record = exec_record(0, &elsewhere, "/tmp/whatever");
    watch.finish(&mut record);
    let Body::Exec(exec) = &record.body else {
        unreachable!()
    };
    assert_eq!(exec.aliases, [bin.join("ncx").to_string_lossy()]);
}

#[test]
fn a_file_met_in_an_exec_is_taken_in() {
    let dir = tempfile::tempdir().unwrap();
    let set = set(&format!(
        "name: k\nmode: enforce\non: {{ exec: {{ paths: [\"{}/nc*\"] }} }}\ndo: [kill]\n",
        dir.path().display()
    ));
    let (mut watch, mut rx) = told(set);
    assert!(targets(&mut rx)["k"].is_empty());
    let late = dir.path().join("nc-late");
    fs::write(&late, b"x").unwrap();
    let mut record = exec_record(0, &late, "./nc-late");
    watch.finish(&mut record);
    watch.flush(Instant::now());
    assert_eq!(
        targets(&mut rx)["k"],
        HashSet::from([identity(&late).unwrap()])
    );
}

#[test]
fn a_burst_of_files_appearing_is_told_once_per_gap() {
    let dir = tempfile::tempdir().unwrap();
    let set = set(&format!(
        "name: k\nmode: enforce\non: {{ exec: {{ paths: [\"{}/**\"] }} }}\ndo: [kill]\n",
        dir.path().display()
    ));
    let (mut watch, mut rx) = told(set);
    assert!(targets(&mut rx)["k"].is_empty());
    let start = Instant::now();
    for i in 0..2_000 {
        let path = dir.path().join(format!("f{i}"));
        fs::write(&path, b"x").unwrap();
        watch.changed(&path);
        watch.flush(start);
    }
    let mut told = 0;
    let mut last = None;
    while let Ok(Notice::Targets { policies, .. }) = rx.try_recv() {
        told += 1;
        last = Some(policies);
    }
    assert_eq!(told, 1, "one notice for the burst, not one per file");
    assert_eq!(last.unwrap()["k"].files.len(), 1, "what was there then");
    let due = watch.flush_at().expect("the rest is told later");
    assert!(due > start);
    watch.flush(due);
    assert_eq!(targets(&mut rx)["k"].len(), 2_000, "then all of it at once");
}

#[test]
fn a_script_is_told_apart_from_its_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sh");
    fs::write(&script, b"#!/bin/sh\n").unwrap();
    let sh = fs::canonicalize("/bin/sh").unwrap();
    let script_text = script.to_string_lossy().into_owned();
    let pid = std::process::id();
    let id = identity(&sh);
    assert_eq!(
        script_of(pid, &script_text, sh.to_str(), id),
        Some(
            fs::canonicalize(&script)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        )
    );
    assert_eq!(
        script_of(pid, "/bin/sh", sh.to_str(), id),
        None,
        "a symlink to the loaded executable is no script"
    );
    assert_eq!(script_of(pid, "/dev/fd/3", sh.to_str(), id), None);
}

#[test]
fn a_new_set_is_always_told_even_with_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ncx"), b"x").unwrap();
    let text = format!(
        "name: k\nmode: enforce\non: {{ exec: {{ paths: [\"{}/nc*\"] }} }}\ndo: [kill]\n",
        dir.path().display()
    );
    let mut watch = ExecWatch::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    watch.tell(tx);
    watch.configure(set(&text));
    let first = targets(&mut rx);
    watch.configure(set(&text));
    assert_eq!(
        targets(&mut rx),
        first,
        "the reload is told: it re-arms the table's fuses"
    );
}

#[test]
fn literal_names_and_name_starts_become_name_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let set = set(&format!(
        "name: k\nmode: enforce\non: {{ exec: {{ paths: [\"{d}/nc*\", \"{d}/exact\", \"{d}/*x\", \"{d}/missing/nc*\"] }} }}\ndo: [kill]\n"
    ));
    let (_watch, mut rx) = told(set);
    let dir_id = fs::metadata(dir.path()).unwrap();
    let dir_id = FileId {
        dev: fsio::encode_dev(dir_id.dev()),
        ino: dir_id.ino(),
    };
    let names = covered(&mut rx).remove("k").unwrap().names;
    let expected: HashSet<NameRule> = [
        NameRule {
            dir: dir_id,
            name: b"nc".to_vec(),
            prefix: true,
        },
        NameRule {
            dir: dir_id,
            name: b"exact".to_vec(),
            prefix: false,
        },
    ]
    .into();
    assert_eq!(
        names, expected,
        "`*x` has no start and `missing/` no directory"
    );
}

#[test]
fn with_no_kill_table_nothing_stays_owed() {
    let dir = tempfile::tempdir().unwrap();
    let set = set(&format!(
        "name: k\nmode: enforce\non: {{ exec: {{ paths: [\"{}/**\"] }} }}\ndo: [kill]\n",
        dir.path().display()
    ));
    let mut watch = ExecWatch::new();
    watch.configure(set);
    let path = dir.path().join("new");
    fs::write(&path, b"x").unwrap();
    watch.changed(&path);
    watch.flush(Instant::now());
    assert_eq!(
        watch.flush_at(),
        None,
        "a settler with no kill table must not spin"
    );
}
