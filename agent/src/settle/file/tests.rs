//! The settling rules, driven without a kernel: raw records as the probes
//! would send them, files in a temporary directory.
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{FileSettler, HOLD, baseline::BaselineStore};
use crate::{
    events::{
        Body, Kind, ProcessContext, Record,
        file::{File, FileChange, MatchedBy},
    },
    fsio,
    policy::PolicySet,
};

struct Fixture {
    _state: tempfile::TempDir,
    dir: tempfile::TempDir,
    settler: FileSettler,
    start: Instant,
}

impl Fixture {
    /// A settler whose one `revert` policy covers `app.conf` and `*.d/*.conf`
    /// in a fresh directory, with `app.conf` holding "good".
    fn new() -> Self {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("app.conf"), "good\n").unwrap();
        let store = BaselineStore::open(state.path()).unwrap();
        let mut settler = FileSettler::new(None, Some(store));
        let drift = settler.configure(&policies(dir.path()));
        assert!(drift.is_empty(), "a first start records, it does not drift");
        Self {
            _state: state,
            dir,
            settler,
            start: Instant::now(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }
}

fn policies(dir: &Path) -> PolicySet {
    let text = format!(
        "name: managed\nmode: enforce\non: {{ file: {{ paths: [\"{0}/app.conf\"] }} }}\ndo: [revert]\n",
        dir.display()
    );
    PolicySet::new(crate::policy::compile_valid(&text))
}

/// A raw record for `path` as the probes send it: matched by inode.
fn raw(path: &Path, change: FileChange, pid: u32) -> Record {
    let key = fsio::state(path).unwrap().expect("a regular file").key;
    let mut record = raw_unmatched(change, pid);
    if let Body::File(file) = &mut record.body {
        (file.dev, file.ino, file.fd) = (key.dev, key.ino, 3);
        file.matched_by = MatchedBy::Inode;
    }
    record
}

/// A raw record of a path-based call, matched by the name hash.
fn by_name(arg: &Path, change: FileChange, pid: u32) -> Record {
    let mut record = raw_unmatched(change, pid);
    if let Body::File(file) = &mut record.body {
        file.arg_path = arg.display().to_string();
        file.matched_by = MatchedBy::Name;
    }
    record
}

fn raw_unmatched(change: FileChange, pid: u32) -> Record {
    Record {
        time: String::new(),
        ktime_ns: 1,
        kind: Kind::File,
        process: ProcessContext {
            pid,
            ..ProcessContext::default()
        },
        body: Body::File(File {
            change: Some(change),
            fd: -1,
            ..File::default()
        }),
    }
}

fn file(record: &Record) -> &File {
    match &record.body {
        Body::File(f) => f,
        other => panic!("not a file event: {other:?}"),
    }
}

#[test]
fn a_write_settles_on_close_with_baseline_and_after() {
    let mut f = Fixture::new();
    let path = f.path("app.conf");
    let open = raw(&path, FileChange::Write, 10);
    assert!(
        f.settler.ingest(open, f.at(0)).is_empty(),
        "held while open"
    );
    fs::write(&path, "evil\n").unwrap();
    let settled = f
        .settler
        .ingest(raw(&path, FileChange::CloseWrite, 10), f.at(1));
    assert_eq!(settled.len(), 1, "settled at close");
    let event = file(&settled[0]);
    assert_eq!(event.path.as_deref(), Some(path.to_str().unwrap()));
    assert_eq!(event.change, Some(FileChange::Write));
    assert_eq!(event.changes, [FileChange::Write, FileChange::CloseWrite]);
    let baseline = &event.baseline["managed"];
    let after = event.after.as_ref().expect("the file is there");
    assert_eq!(baseline.size, 5);
    assert_ne!(baseline.sha256, after.sha256, "before and after differ");
    assert_eq!(
        after.sha256.as_deref(),
        Some(fsio::content_hash(&path).unwrap().as_str())
    );
    assert!(f.settler.next_deadline().is_none(), "nothing left pending");
}

#[test]
fn a_close_without_a_change_waits_for_the_writer_then_is_dropped() {
    let mut f = Fixture::new();
    let path = f.path("app.conf");
    f.settler.ingest(raw(&path, FileChange::Write, 10), f.at(0));
    // A shell closes the descriptor it opened after dup2, then writes.
    let settled = f
        .settler
        .ingest(raw(&path, FileChange::CloseWrite, 10), f.at(1));
    assert!(settled.is_empty(), "unchanged at close: look again later");
    assert_eq!(f.settler.next_deadline(), Some(f.at(0) + HOLD));
    fs::write(&path, "late\n").unwrap();
    let settled = f.settler.process_exited(10, f.at(2));
    assert_eq!(settled.len(), 1, "the writer's exit settles its change");

    fs::write(&path, "good\n").unwrap();
    f.settler.ingest(raw(&path, FileChange::Write, 11), f.at(3));
    let settled = f.settler.process_exited(11, f.at(4));
    assert!(
        settled.is_empty(),
        "an exit with nothing changed settles nothing"
    );
    assert!(f.settler.next_deadline().is_none());
}

#[test]
fn a_writer_holding_the_file_open_is_settled_after_the_hold() {
    let mut f = Fixture::new();
    let path = f.path("app.conf");
    f.settler.ingest(raw(&path, FileChange::Write, 10), f.at(0));
    fs::write(&path, "held\n").unwrap();
    assert!(f.settler.expire(f.at(100)).is_empty(), "not yet due");
    let due = f.settler.next_deadline().expect("a deadline");
    assert_eq!(due, f.at(0) + HOLD);
    let settled = f.settler.expire(due);
    assert_eq!(settled.len(), 1, "settled when the hold runs out");
    assert_eq!(file(&settled[0]).change, Some(FileChange::Write));
}

#[test]
fn path_calls_are_matched_by_name_and_verified_against_the_file() {
    let mut f = Fixture::new();
    let path = f.path("app.conf");
    // Another file of the same name elsewhere: the hash matches, the file
    // did not change, so nothing is reported.
    let other = f.dir.path().join("elsewhere");
    fs::create_dir(&other).unwrap();
    let settled = f.settler.ingest(
        by_name(&other.join("app.conf"), FileChange::Chmod, 12),
        f.at(0),
    );
    assert!(
        settled.is_empty(),
        "a same-named other file is not a change"
    );

    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let settled = f
        .settler
        .ingest(by_name(&path, FileChange::Chmod, 12), f.at(1));
    assert_eq!(settled.len(), 1, "a chmod settles at once");
    let event = file(&settled[0]);
    assert_eq!(event.change, Some(FileChange::Chmod));
    assert_eq!(event.after.as_ref().unwrap().mode, 0o666);

    fs::remove_file(&path).unwrap();
    let settled = f
        .settler
        .ingest(by_name(&path, FileChange::Unlink, 12), f.at(2));
    assert_eq!(settled.len(), 1);
    let event = file(&settled[0]);
    assert_eq!(event.change, Some(FileChange::Unlink));
    assert!(event.after.is_none(), "nothing left at the path");
    assert!(event.baseline.contains_key("managed"));
}

#[test]
fn a_restart_reports_drift_against_the_stored_baseline() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.conf");
    fs::write(&path, "good\n").unwrap();
    let set = policies(dir.path());
    let mut first = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()));
    assert!(first.configure(&set).is_empty());
    drop(first);

    fs::write(&path, "changed while stopped\n").unwrap();
    let mut second = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()));
    let drift = second.configure(&set);
    assert_eq!(drift.len(), 1);
    let event = file(&drift[0]);
    assert_eq!(event.change, Some(FileChange::Drift));
    assert_eq!(event.path.as_deref(), Some(path.to_str().unwrap()));
    assert!(
        event.baseline.contains_key("managed"),
        "a drift carries what to revert to"
    );
    assert_eq!(event.after.as_ref().unwrap().size, 22);

    fs::write(&path, "good\n").unwrap();
    let mut third = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()));
    assert!(
        third.configure(&set).is_empty(),
        "back as recorded: no drift"
    );
}

#[test]
fn a_restore_is_followed_to_the_new_inode() {
    let mut f = Fixture::new();
    let path = f.path("app.conf");
    let before = fsio::state(&path).unwrap().unwrap().key;
    // A restore renames a new file over the path.
    let temp = f.path(".app.conf.new");
    fs::write(&temp, "good\n").unwrap();
    fs::rename(&temp, &path).unwrap();
    let after = fsio::state(&path).unwrap().unwrap().key;
    assert_ne!(before, after);
    assert!(
        f.settler.watch().paths_of(&after).is_empty(),
        "not yet followed"
    );
    f.settler.restored(
        path.to_str().unwrap(),
        crate::fsio::state(&path).ok().flatten(),
    );
    assert_eq!(
        f.settler.watch().paths_of(&after),
        [path.display().to_string()]
    );
    assert!(f.settler.watch().paths_of(&before).is_empty());
}

/// Renames a fresh "good" file over `app.conf`, as a revert does, and
/// tells the settler.
fn restore(f: &mut Fixture) -> PathBuf {
    let path = f.path("app.conf");
    let temp = f.path(".app.conf.new");
    fs::write(&temp, "good\n").unwrap();
    fs::rename(&temp, &path).unwrap();
    let now = fsio::state(&path).unwrap();
    f.settler.restored(path.to_str().unwrap(), now);
    path
}

#[test]
fn a_write_racing_the_look_after_a_restore_is_judged_whole_by_its_writer() {
    let mut f = Fixture::new();
    let path = restore(&mut f);
    // The next write has begun (its open truncated the file) when the look falls due.
    fs::write(&path, "").unwrap();
    let now = Instant::now();
    let open = raw(&path, FileChange::Write, 10);
    assert!(f.settler.ingest(open, now).is_empty(), "held while open");
    let grace = super::NOTICE_GRACE;
    assert!(
        f.settler.expire(now + 2 * grace).is_empty(),
        "not judged mid-write"
    );
    fs::write(&path, "evil\n").unwrap();
    let close = raw(&path, FileChange::CloseWrite, 10);
    let settled = f.settler.ingest(close, now + 3 * grace);
    assert_eq!(settled.len(), 1, "one change");
    assert_eq!(settled[0].process.pid, 10, "by its writer");
    assert_eq!(file(&settled[0]).after.as_ref().unwrap().size, 5, "whole");
}

#[test]
fn a_change_no_record_reports_is_found_by_the_look_after_a_restore() {
    let mut f = Fixture::new();
    let path = restore(&mut f);
    fs::write(&path, "evil\n").unwrap();
    let later = Instant::now() + 2 * super::NOTICE_GRACE;
    let settled = f.settler.expire(later);
    assert_eq!(settled.len(), 1, "found without a record");
    assert_eq!(settled[0].process.pid, 0, "nobody to name");
}

#[test]
fn without_a_baseline_store_changes_are_reported_not_compared() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.conf");
    fs::write(&path, "x\n").unwrap();
    let mut settler = FileSettler::new(None, None);
    assert!(settler.configure(&policies(dir.path())).is_empty());
    let now = Instant::now();
    settler.ingest(raw(&path, FileChange::Write, 5), now);
    let settled = settler.ingest(raw(&path, FileChange::CloseWrite, 5), now);
    assert_eq!(settled.len(), 1);
    let event = file(&settled[0]);
    assert!(event.baseline.is_empty());
    assert!(event.after.as_ref().unwrap().sha256.is_none());
}

/// Sets `user.NAME` on `path`; false when the filesystem has no user
/// attributes (the caller then skips).
fn set_user_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let file = fs::File::open(path).unwrap();
    match rustix::fs::fsetxattr(&file, name, value, rustix::fs::XattrFlags::empty()) {
        Err(rustix::io::Errno::OPNOTSUPP) => false,
        other => {
            other.unwrap();
            true
        }
    }
}

/// Ingests a fanotify notice at `now` and returns what is settled once the
/// probes' grace for it has passed.
fn notice(settler: &mut FileSettler, record: Record, now: Instant) -> Vec<Record> {
    let mut settled = settler.ingest(record, now);
    settled.extend(settler.expire(now + super::NOTICE_GRACE));
    settled
}

/// A fanotify notice of an attribute change of `path`.
fn attrib(path: &Path) -> Record {
    let mut record = raw(path, FileChange::Attrib, 13);
    if let Body::File(file) = &mut record.body {
        file.matched_by = MatchedBy::Fanotify;
    }
    record
}

#[test]
fn a_change_of_extended_attributes_alone_is_a_change() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.conf");
    fs::write(&path, "good\n").unwrap();
    if !set_user_xattr(&path, "user.reflex", b"deployed") {
        eprintln!("no user.* attributes on this filesystem; skipped");
        return;
    }
    let set = policies(dir.path());
    let mut settler = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()));
    assert!(settler.configure(&set).is_empty());
    let now = Instant::now();

    set_user_xattr(&path, "user.reflex", b"tampered");
    let settled = notice(&mut settler, attrib(&path), now);
    assert_eq!(settled.len(), 1, "only the attributes differ");
    let event = file(&settled[0]);
    let (baseline, after) = (&event.baseline["managed"], event.after.as_ref().unwrap());
    assert_eq!(
        (baseline.sha256.as_ref(), baseline.mode),
        (after.sha256.as_ref(), after.mode)
    );
    assert!(baseline.xattrs_sha256.is_some());
    assert_ne!(baseline.xattrs_sha256, after.xattrs_sha256);

    set_user_xattr(&path, "user.reflex", b"deployed");
    assert!(
        notice(&mut settler, attrib(&path), now + Duration::from_secs(1)).is_empty(),
        "back as recorded: nothing to answer"
    );
    drop(settler);

    set_user_xattr(&path, "user.evil", b"1");
    let mut restarted = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()));
    assert_eq!(
        restarted.configure(&set).len(),
        1,
        "an added attribute is drift"
    );
}

#[test]
fn a_baseline_from_before_attributes_were_recorded_does_not_compare_them() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.conf");
    fs::write(&path, "good\n").unwrap();
    if !set_user_xattr(&path, "user.reflex", b"deployed") {
        eprintln!("no user.* attributes on this filesystem; skipped");
        return;
    }
    let index = state.path().join("baselines/policies");
    fs::create_dir_all(&index).unwrap();
    let state_now = fsio::state(&path).unwrap().unwrap();
    fs::write(
        index.join("managed.json"),
        serde_json::json!({ path.to_str().unwrap(): {
            "sha256": fsio::content_hash(&path).unwrap(), "mode": state_now.mode,
            "uid": state_now.uid, "gid": state_now.gid, "size": 5,
            "recorded": "2026-01-01T00:00:00Z" } })
        .to_string(),
    )
    .unwrap();
    let mut settler = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()));
    assert!(
        settler.configure(&policies(dir.path())).is_empty(),
        "no drift"
    );
    set_user_xattr(&path, "user.reflex", b"tampered");
    assert!(
        notice(&mut settler, attrib(&path), Instant::now()).is_empty(),
        "attributes are not compared with a baseline that has none"
    );
    fs::write(&path, "evil\n").unwrap();
    let settled = settler.ingest(by_name(&path, FileChange::Truncate, 14), Instant::now());
    assert_eq!(settled.len(), 1, "content still is");
    assert!(
        file(&settled[0]).baseline["managed"]
            .xattrs_sha256
            .is_none()
    );
}

#[test]
fn a_blown_fuse_takes_the_kill_off_only_the_files_no_other_policy_kills_for() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.conf"), dir.path().join("b.conf"));
    fs::write(&a, "a\n").unwrap();
    fs::write(&b, "b\n").unwrap();
    let text = format!(
        "name: broad\nmode: enforce\non: {{ file: {{ paths: [\"{0}/*.conf\"] }} }}\ndo: [kill, revert]\n---\nname: narrow\nmode: enforce\non: {{ file: {{ paths: [\"{0}/b.conf\"] }} }}\ndo: [kill]\n",
        dir.path().display()
    );
    let set = PolicySet::new(crate::policy::compile_valid(&text));
    let mut settler = FileSettler::new(None, None);
    settler.configure(&set);
    let kill = |s: &FileSettler, p: &Path| s.watch().get(p.to_str().unwrap()).unwrap().kill;
    assert!(kill(&settler, &a) && kill(&settler, &b));
    settler.kills_off("broad");
    assert!(
        !kill(&settler, &a),
        "only the blown policy killed for a.conf"
    );
    assert!(kill(&settler, &b), "narrow still kills for b.conf");
    settler.configure(&set);
    assert!(kill(&settler, &a), "a reload re-arms");
}
