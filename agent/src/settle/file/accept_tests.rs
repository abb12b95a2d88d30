//! The settler's accept logic without a kernel: raw records from writers
//! with made-up lineages, files in a temporary directory.
use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use super::{FileSettler, baseline::BaselineStore, history::How};
use crate::{
    events::{
        Ancestor, Body, Kind, ProcessContext, Record,
        clock::BootClock,
        file::{File, FileChange, MatchedBy},
    },
    fsio,
    policy::{PolicySet, compile, load},
};

struct Fixture {
    state: tempfile::TempDir,
    _dir: tempfile::TempDir,
    path: PathBuf,
    settler: FileSettler,
    start: Instant,
}

fn set(path: &Path, extra: &str) -> PolicySet {
    let text = format!(
        "name: managed\nmode: enforce\non: {{ file: {{ paths: [\"{}\"] }} }}\n{extra}do: [revert, alert]\n",
        path.display()
    );
    let (sources, mut errors) = load::parse_source(Path::new("t.yaml"), &text);
    let policies = compile::compile_all(sources, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    PolicySet::new(policies)
}

const ACCEPT: &str = "accept_from: { process: { ancestor_exe: [\"/usr/bin/dpkg\", \"/usr/bin/ansible*\"], uid: [0] } }\n";

impl Fixture {
    fn new(extra: &str) -> Self {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.conf");
        fs::write(&path, "v1\n").unwrap();
        let mut settler = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()));
        assert!(settler.configure(&set(&path, extra)).is_empty());
        Self {
            state,
            _dir: dir,
            path,
            settler,
            start: Instant::now(),
        }
    }

    /// `writer` rewrites the file with `content` (open, write, close);
    /// returns what settled.
    fn write(&mut self, writer: &ProcessContext, content: &str) -> Vec<Record> {
        let now = self.start;
        let open = raw(&self.path, FileChange::Write, writer);
        assert!(self.settler.ingest(open, now).is_empty());
        fs::write(&self.path, content).unwrap();
        let closed = self
            .settler
            .ingest(raw(&self.path, FileChange::CloseWrite, writer), now);
        if !closed.is_empty() {
            return closed;
        }
        // An authorised writer's change settles when the writer exits.
        self.settler.process_exited(writer.pid, now)
    }

    fn store(&self) -> BaselineStore {
        BaselineStore::open(self.state.path()).unwrap()
    }
}

fn raw(path: &Path, change: FileChange, writer: &ProcessContext) -> Record {
    let key = fsio::state(path).unwrap().expect("a regular file").key;
    Record {
        time: String::new(),
        ktime_ns: BootClock::now_ns(),
        kind: Kind::File,
        process: writer.clone(),
        body: Body::File(File {
            change: Some(change),
            dev: key.dev,
            ino: key.ino,
            fd: 3,
            matched_by: MatchedBy::Inode,
            ..File::default()
        }),
    }
}

fn image(pid: u32, exe: &str, filename: &str) -> Ancestor {
    Ancestor {
        pid,
        start_ktime_ns: Some(1),
        exe: Some(exe.into()),
        filename: Some(filename.into()),
    }
}

/// A process `exe` run as `uid` under `ancestors` (nearest first).
fn writer(pid: u32, uid: u32, exe: &str, ancestors: Vec<Ancestor>) -> ProcessContext {
    ProcessContext {
        pid,
        uid,
        exe: Some(exe.into()),
        image: Some(Arc::new(image(pid, exe, exe))),
        ancestors: Arc::from(ancestors),
        ..ProcessContext::default()
    }
}

fn ansible_module(pid: u32) -> ProcessContext {
    writer(
        pid,
        0,
        "/usr/bin/python3.11",
        vec![
            image(pid - 1, "/usr/bin/dash", "/bin/sh"),
            image(pid - 2, "/usr/bin/python3.11", "/usr/bin/ansible"),
            image(1, "/usr/lib/systemd/systemd", "/sbin/init"),
        ],
    )
}

fn file(record: &Record) -> &File {
    match &record.body {
        Body::File(f) => f,
        other => panic!("not a file event: {other:?}"),
    }
}

#[test]
fn a_descendant_of_an_authorised_writer_changes_the_baseline() {
    let mut f = Fixture::new(ACCEPT);
    let v1 = fsio::content_hash(&f.path).unwrap();
    let settled = f.write(&ansible_module(30), "v2 by ansible\n");
    assert_eq!(settled.len(), 1);
    let event = file(&settled[0]);
    assert_eq!(event.change, Some(FileChange::Accepted));
    assert!(event.changes.contains(&FileChange::Accepted));
    let accepted = event.accepted.as_ref().expect("accepted");
    let v2 = fsio::content_hash(&f.path).unwrap();
    assert_eq!(accepted.policies, ["managed"]);
    assert_eq!(accepted.before.as_deref(), Some(v1.as_str()));
    assert_eq!(accepted.after.as_deref(), Some(v2.as_str()));
    let by = accepted.by.as_ref().unwrap();
    assert_eq!((by.pid, by.path.as_deref()), (28, Some("/usr/bin/ansible")));
    assert_eq!(
        event.baseline["managed"].sha256.as_deref(),
        Some(v2.as_str()),
        "the event carries the new baseline"
    );

    let store = f.store();
    let versions = store.versions("managed", f.path.to_str().unwrap());
    assert_eq!(versions.len(), 2, "the old baseline is kept as history");
    assert_eq!(
        (versions[0].how, versions[0].sha256.as_str()),
        (How::Accepted, v2.as_str())
    );
    assert!(
        versions[0]
            .by
            .as_deref()
            .unwrap()
            .contains("/usr/bin/ansible")
    );

    // An ordinary process afterwards: compared with the accepted version.
    let settled = f.write(&writer(40, 0, "/usr/bin/vi", vec![]), "tampered\n");
    let event = file(&settled[0]);
    assert_eq!(event.change, Some(FileChange::Write));
    assert!(event.accepted.is_none());
    assert_eq!(
        event.baseline["managed"].sha256.as_deref(),
        Some(v2.as_str())
    );
}

#[test]
fn claims_by_name_wrong_users_and_mixed_writers_are_not_accepted() {
    let mut f = Fixture::new(ACCEPT);
    let cases = [
        // A copied binary named like the tool, elsewhere.
        writer(
            50,
            0,
            "/tmp/x/dpkg",
            vec![image(49, "/bin/bash", "/bin/bash")],
        ),
        // A script named like the tool, elsewhere.
        writer(
            51,
            0,
            "/usr/bin/python3.11",
            vec![image(50, "/usr/bin/python3.11", "/tmp/ansible")],
        ),
        // The real tool, run by an ordinary user.
        writer(52, 1000, "/usr/bin/dpkg", vec![]),
    ];
    for (i, w) in cases.iter().enumerate() {
        let settled = f.write(w, &format!("claim {i}\n"));
        let event = file(&settled[0]);
        assert_eq!(event.change, Some(FileChange::Write), "case {i}");
        assert!(event.accepted.is_none(), "case {i}");
    }

    // An authorised writer and an ordinary one in the same change.
    let now = f.start;
    let dpkg = writer(60, 0, "/usr/bin/dpkg", vec![]);
    let other = writer(61, 0, "/usr/bin/cat", vec![]);
    assert!(
        f.settler
            .ingest(raw(&f.path, FileChange::Write, &dpkg), now)
            .is_empty()
    );
    assert!(
        f.settler
            .ingest(raw(&f.path, FileChange::Write, &other), now)
            .is_empty()
    );
    fs::write(&f.path, "mixed\n").unwrap();
    let settled = f
        .settler
        .ingest(raw(&f.path, FileChange::CloseWrite, &dpkg), now);
    assert!(
        file(&settled[0]).accepted.is_none(),
        "one unauthorised writer spoils it"
    );
    let store = f.store();
    assert_eq!(store.versions("managed", f.path.to_str().unwrap()).len(), 1);
}

#[test]
fn an_unauthorised_write_that_raced_the_acceptance_withdraws_it() {
    let mut f = Fixture::new(ACCEPT);
    let v1 = fsio::content_hash(&f.path).unwrap();
    let early = raw(
        &f.path,
        FileChange::CloseWrite,
        &writer(70, 0, "/usr/bin/cat", vec![]),
    );
    let settled = f.write(&writer(71, 0, "/usr/bin/dpkg", vec![]), "v2\n");
    assert_eq!(file(&settled[0]).change, Some(FileChange::Accepted));
    // The ordinary writer's event was stamped before the acceptance read
    // and reaches the settler only now.
    let now = f.start;
    let settled = f.settler.ingest(early, now);
    let settled = if settled.is_empty() {
        f.settler.process_exited(70, now)
    } else {
        settled
    };
    let event = file(&settled[0]);
    assert!(event.accepted.is_none());
    assert_eq!(
        event.baseline["managed"].sha256.as_deref(),
        Some(v1.as_str()),
        "back to the version before the acceptance: a revert restores it"
    );
    let store = f.store();
    assert_eq!(
        store.versions("managed", f.path.to_str().unwrap())[0].how,
        How::Withdrawn
    );
}

#[test]
fn on_drift_accept_takes_the_file_as_found_and_report_leaves_the_baseline() {
    for (on_drift, accepted) in [("accept", true), ("report", false), ("revert", false)] {
        let extra = format!("on_drift: {on_drift}\n");
        let f = Fixture::new(&extra);
        drop(f.settler);
        fs::write(&f.path, "deployed while stopped\n").unwrap();
        let mut settler =
            FileSettler::new(None, Some(BaselineStore::open(f.state.path()).unwrap()));
        let drift = settler.configure(&set(&f.path, &extra));
        assert_eq!(drift.len(), 1, "{on_drift}: reported as drift");
        let event = file(&drift[0]);
        assert_eq!(event.change, Some(FileChange::Drift));
        assert_eq!(event.accepted.is_some(), accepted, "{on_drift}");
        let now = fsio::content_hash(&f.path).unwrap();
        let baseline = event.baseline["managed"].sha256.clone().unwrap();
        assert_eq!(baseline == now, accepted, "{on_drift}");
        let again = settler.configure(&set(&f.path, &extra));
        assert_eq!(
            again.is_empty(),
            accepted,
            "{on_drift}: accepted drift is drift no more"
        );
    }
}

/// A path call matched by the name hash alone, naming `arg`.
fn by_name(arg: &Path, change: FileChange, writer: &ProcessContext) -> Record {
    Record {
        time: String::new(),
        ktime_ns: BootClock::now_ns(),
        kind: Kind::File,
        process: writer.clone(),
        body: Body::File(File {
            change: Some(change),
            arg_path: arg.display().to_string(),
            fd: -1,
            matched_by: MatchedBy::Name,
            ..File::default()
        }),
    }
}

#[test]
fn a_deploy_of_another_file_of_the_same_name_accepts_nothing_here() {
    let mut f = Fixture::new(ACCEPT);
    // Someone changed the managed file without being seen ...
    fs::write(&f.path, "silently changed\n").unwrap();
    // ... and a real deploy renames a file of the same name elsewhere.
    let elsewhere = f.path.parent().unwrap().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let other = elsewhere.join(f.path.file_name().unwrap());
    let settled = f.settler.ingest(
        by_name(&other, FileChange::Rename, &ansible_module(70)),
        f.start,
    );
    let event = file(&settled[0]);
    assert!(
        event.accepted.is_none(),
        "the deploy named another file: the change here is not its"
    );
    // The same deploy naming this file (with a doubled slash) is accepted.
    fs::write(&f.path, "deployed\n").unwrap();
    let spelled = format!("/{}", f.path.display());
    let settled = f.settler.ingest(
        by_name(Path::new(&spelled), FileChange::Rename, &ansible_module(80)),
        f.start,
    );
    assert!(
        file(&settled[0]).accepted.is_some(),
        "{:?}",
        file(&settled[0])
    );
}

#[test]
fn a_deploy_that_writes_after_closing_is_taken_when_it_exits() {
    let mut f = Fixture::new(ACCEPT);
    let deploy = ansible_module(90);
    let now = f.start;
    // A shell's `> file`: open and truncate, close the opened descriptor
    // after dup2, then write through the duplicate.
    assert!(
        f.settler
            .ingest(raw(&f.path, FileChange::Write, &deploy), now)
            .is_empty()
    );
    fs::write(&f.path, "").unwrap();
    let closed = f
        .settler
        .ingest(raw(&f.path, FileChange::CloseWrite, &deploy), now);
    assert!(closed.is_empty(), "not settled at the first close");
    fs::write(&f.path, "first line\nsecond line\n").unwrap();
    let settled = f.settler.process_exited(90, now);
    let event = file(&settled[0]);
    assert_eq!(event.change, Some(FileChange::Accepted));
    assert_eq!(event.after.as_ref().unwrap().size, 23, "the whole deploy");
}
