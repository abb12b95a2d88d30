//! Files that appear under a `revert` policy's glob: created while the
//! agent runs (by an authorised writer or not) and created while it was
//! down, driven without a kernel.
use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
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

const ACCEPT: &str = "accept_from: { process: { ancestor_exe: [\"/usr/bin/dpkg\"], uid: [0] } }\n";

fn set(dir: &Path, extra: &str) -> PolicySet {
    let text = format!(
        "name: managed\nmode: enforce\non: {{ file: {{ paths: [\"{}/*.conf\"] }} }}\n{extra}do: [revert, alert]\n",
        dir.display()
    );
    let (sources, mut errors) = load::parse_source(Path::new("t.yaml"), &text);
    let policies = compile::compile_all(sources, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    PolicySet::new(policies)
}

struct Fixture {
    state: tempfile::TempDir,
    dir: tempfile::TempDir,
    extra: String,
    settler: FileSettler,
}

impl Fixture {
    /// A policy covering `*.conf` in a directory holding `app.conf`, taken
    /// into use for the first time.
    fn new(extra: &str) -> Self {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("app.conf"), "v1\n").unwrap();
        let mut settler = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()));
        assert!(
            settler.configure(&set(dir.path(), extra)).is_empty(),
            "a policy loaded for the first time records what it finds"
        );
        Self {
            state,
            dir,
            extra: extra.to_string(),
            settler,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store(&self) -> BaselineStore {
        BaselineStore::open(self.state.path()).unwrap()
    }

    /// Stops and starts the agent: a fresh settler on the same store.
    fn restart(&mut self) -> Vec<Record> {
        self.settler = FileSettler::new(None, Some(self.store()));
        self.settler.configure(&set(self.dir.path(), &self.extra))
    }

    /// `writer`'s creating open of `name` (already written) and its close,
    /// at `now`, the writer still at work; returns what settled.
    fn open_and_close(&mut self, name: &str, writer: &ProcessContext, now: Instant) -> Vec<Record> {
        let key = fsio::state(&self.path(name)).unwrap().unwrap().key;
        let mut close = created(self.dir.path(), name, writer);
        if let Body::File(f) = &mut close.body {
            (f.change, f.matched_by, f.dev, f.ino) = (
                Some(FileChange::CloseWrite),
                MatchedBy::Inode,
                key.dev,
                key.ino,
            );
        }
        let mut settled = self
            .settler
            .ingest(created(self.dir.path(), name, writer), now);
        settled.extend(self.settler.ingest(close, now));
        settled
    }

    /// `writer` creates `name` with `content` (a creating open seen in the
    /// watched directory, then the close), then exits; returns what settled.
    fn create(&mut self, name: &str, content: &str, writer: &ProcessContext) -> Vec<Record> {
        let path = self.path(name);
        fs::write(&path, content).unwrap();
        let now = Instant::now();
        let mut settled = self.open_and_close(name, writer, now);
        settled.extend(self.settler.process_exited(writer.pid, now));
        settled
    }
}

/// The raw record of a creating open of `name` in the watched `dir`.
fn created(dir: &Path, name: &str, writer: &ProcessContext) -> Record {
    let meta = fs::metadata(dir).unwrap();
    Record {
        time: String::new(),
        ktime_ns: BootClock::now_ns(),
        kind: Kind::File,
        process: writer.clone(),
        body: Body::File(File {
            change: Some(FileChange::Write),
            dir_dev: fsio::encode_dev(meta.dev()),
            dir_ino: meta.ino(),
            name: name.to_string(),
            open_flags: reflex_wire::file::open::O_CREAT | reflex_wire::file::open::O_WRONLY,
            fd: 3,
            matched_by: MatchedBy::Dir,
            ..File::default()
        }),
    }
}

fn writer(pid: u32, uid: u32, exe: &str) -> ProcessContext {
    ProcessContext {
        pid,
        uid,
        exe: Some(exe.into()),
        image: Some(Arc::new(Ancestor {
            pid,
            start_ktime_ns: Some(1),
            exe: Some(exe.into()),
            filename: Some(exe.into()),
        })),
        ..ProcessContext::default()
    }
}

fn file(record: &Record) -> &File {
    match &record.body {
        Body::File(f) => f,
        other => panic!("not a file event: {other:?}"),
    }
}

#[test]
fn a_file_created_by_anyone_else_is_a_create_with_no_baseline_every_time() {
    let mut f = Fixture::new(ACCEPT);
    let nobody = writer(40, 65534, "/usr/bin/dash");
    for attempt in 0..2 {
        let settled = f.create("evil.conf", "backdoor=1\n", &nobody);
        assert_eq!(settled.len(), 1, "attempt {attempt}");
        let event = file(&settled[0]);
        assert_eq!(event.change, Some(FileChange::Create), "attempt {attempt}");
        assert!(event.changes.contains(&FileChange::Create));
        assert!(
            event.baseline.is_empty() && event.accepted.is_none(),
            "nothing to restore: a revert removes it"
        );
        let evil = f.path("evil.conf");
        assert!(f.store().get("managed", evil.to_str().unwrap()).is_none());
        // The revert removes it and tells the settler; the same name made
        // again is a creation again.
        fs::remove_file(&evil).unwrap();
        f.settler.restored(
            evil.to_str().unwrap(),
            crate::fsio::state(&evil).ok().flatten(),
        );
    }
    let restart = f.restart();
    assert!(restart.is_empty(), "nothing left behind: {restart:?}");
}

#[test]
fn a_file_created_by_an_authorised_writer_becomes_its_baseline() {
    let mut f = Fixture::new(ACCEPT);
    let settled = f.create("new.conf", "fresh=1\n", &writer(50, 0, "/usr/bin/dpkg"));
    assert_eq!(settled.len(), 1);
    let event = file(&settled[0]);
    assert_eq!(event.change, Some(FileChange::Accepted));
    assert!(event.changes.contains(&FileChange::Create));
    let accepted = event.accepted.as_ref().unwrap();
    assert_eq!(accepted.policies, ["managed"]);
    assert!(accepted.before.is_none(), "there was nothing before");
    let path = f.path("new.conf");
    let store = f.store();
    let baseline = store.get("managed", path.to_str().unwrap()).unwrap();
    assert_eq!(baseline.how, How::Accepted);
    assert_eq!(baseline.sha256, fsio::content_hash(&path).unwrap());
    assert!(f.restart().is_empty(), "kept across a restart");
}

#[test]
fn a_file_planted_while_stopped_is_drift_and_create_per_on_drift() {
    for (on_drift, recorded) in [("revert", false), ("report", false), ("accept", true)] {
        let mut f = Fixture::new(&format!("on_drift: {on_drift}\n"));
        let planted = f.path("planted.conf");
        fs::write(&planted, "planted=1\n").unwrap();
        let drift = f.restart();
        assert_eq!(drift.len(), 1, "{on_drift}");
        let event = file(&drift[0]);
        assert_eq!(event.change, Some(FileChange::Drift), "{on_drift}");
        assert!(event.changes.contains(&FileChange::Create), "{on_drift}");
        assert_eq!(event.path.as_deref(), planted.to_str());
        assert_eq!(event.accepted.is_some(), recorded, "{on_drift}");
        assert_eq!(
            event.baseline.contains_key("managed"),
            recorded,
            "{on_drift}"
        );
        let store = f.store();
        let baseline = store.get("managed", planted.to_str().unwrap());
        assert_eq!(baseline.map(|b| b.how), recorded.then_some(How::Drift));
        // Until accepted, every start says so again.
        assert_eq!(f.restart().is_empty(), recorded, "{on_drift}");
    }
}

#[test]
fn only_a_policy_or_glob_taken_into_use_for_the_first_time_records() {
    // A glob that matched nothing when its policy was first loaded is
    // known all the same.
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settler = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()));
    assert!(settler.configure(&set(dir.path(), "")).is_empty());
    fs::write(dir.path().join("planted.conf"), "x\n").unwrap();
    let mut settler = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()));
    let drift = settler.configure(&set(dir.path(), ""));
    assert_eq!(drift.len(), 1, "an empty glob is known once in force");

    // The same files under a policy of another name: new, so recorded.
    let other = tempfile::tempdir().unwrap();
    let renamed = format!(
        "name: renamed\nmode: enforce\non: {{ file: {{ paths: [\"{}/*.conf\"] }} }}\ndo: [revert]\n",
        dir.path().display()
    );
    let mut settler = FileSettler::new(None, Some(BaselineStore::open(other.path()).unwrap()));
    let set = PolicySet::new(crate::policy::compile_valid(&renamed));
    assert!(settler.configure(&set).is_empty());
    assert!(settler.configure(&set).is_empty(), "and known from then on");
}

#[test]
fn a_creation_still_settling_at_a_reload_is_left_to_settle() {
    let mut f = Fixture::new(ACCEPT);
    let dpkg = writer(60, 0, "/usr/bin/dpkg");
    fs::write(f.path("deploy.conf"), "deploying\n").unwrap();
    let now = Instant::now();
    assert!(
        f.settler
            .ingest(created(f.dir.path(), "deploy.conf", &dpkg), now)
            .is_empty(),
        "held while the deploy runs"
    );
    let reload = f.settler.configure(&set(f.dir.path(), ACCEPT));
    assert!(reload.is_empty(), "not judged as drift: {reload:?}");
    let settled = f.settler.process_exited(60, now);
    assert_eq!(file(&settled[0]).change, Some(FileChange::Accepted));
}

#[test]
fn a_file_deleted_while_stopped_keeps_its_baseline_for_the_restore() {
    let mut f = Fixture::new("");
    let app = f.path("app.conf");
    fs::remove_file(&app).unwrap();
    let drift = f.restart();
    assert_eq!(drift.len(), 1);
    let event = file(&drift[0]);
    assert_eq!(event.change, Some(FileChange::Drift));
    assert!(!event.changes.contains(&FileChange::Create));
    assert!(event.after.is_none(), "nothing at the path");
    assert!(
        event.baseline.contains_key("managed"),
        "what a revert restores"
    );
}

/// A fanotify notice that `writer` changed the attributes of `path`.
fn attrib(path: &Path, writer: &ProcessContext) -> Record {
    let key = fsio::state(path).unwrap().unwrap().key;
    Record {
        time: String::new(),
        ktime_ns: BootClock::now_ns(),
        kind: Kind::File,
        process: writer.clone(),
        body: Body::File(File {
            change: Some(FileChange::Attrib),
            changes: vec![FileChange::Attrib],
            dev: key.dev,
            ino: key.ino,
            fd: -1,
            matched_by: MatchedBy::Fanotify,
            ..File::default()
        }),
    }
}

/// `writer` (still at work) creates `name`, mode 0600, and closes it.
fn open_and_close(f: &mut Fixture, name: &str, writer: &ProcessContext, now: Instant) {
    let path = f.path(name);
    fs::write(&path, "workers=8\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let settled = f.open_and_close(name, writer, now);
    assert!(
        settled.is_empty(),
        "held while the deploy runs: {settled:?}"
    );
}

#[test]
fn a_slow_deploy_becomes_the_baseline_as_it_leaves_the_file() {
    // install: open, copy, close, (stalled on a busy host past HOLD), chmod.
    let mut f = Fixture::new(ACCEPT);
    let dpkg = writer(70, 0, "/usr/bin/dpkg");
    let start = Instant::now();
    open_and_close(&mut f, "new.conf", &dpkg, start);
    let stalled = start + super::HOLD + std::time::Duration::from_millis(50);
    let early = f.settler.expire(stalled);
    assert!(
        early.is_empty(),
        "not taken before the deploy is done: {early:?}"
    );

    let path = f.path("new.conf");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let mut settled = f.settler.ingest(attrib(&path, &dpkg), stalled);
    settled.extend(f.settler.process_exited(70, stalled));
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert_eq!(file(&settled[0]).change, Some(FileChange::Accepted));
    let store = f.store();
    let baseline = store.get("managed", path.to_str().unwrap()).unwrap();
    assert_eq!(baseline.mode & 0o7777, 0o666, "the mode it left");
}

/// The next look back from the pool; fails the test when none went out.
fn next_look(
    looked: &mut tokio::sync::mpsc::UnboundedReceiver<super::look::Looked>,
) -> super::look::Looked {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(30), looked.recv()).await
    })
    .expect("a look went out to the pool")
    .expect("the pool answers")
}

#[test]
fn a_deploys_later_notice_during_its_look_is_taken_into_the_acceptance() {
    let mut f = Fixture::new(ACCEPT);
    let pool = crate::fsio::pool::FsPool::start(
        crate::fsio::pool::PoolSettings::default(),
        crate::fsio::pool::PoolMetrics::unregistered(),
    );
    let settler = std::mem::replace(&mut f.settler, FileSettler::new(None, None));
    f.settler = settler.with_pool(pool.clone());
    let mut looked = f.settler.take_looked().unwrap();
    let dpkg = writer(71, 0, "/usr/bin/dpkg");
    let path = f.path("new.conf");
    let now = Instant::now();
    open_and_close(&mut f, "new.conf", &dpkg, now);
    // Its first chmod is its last call as far as the agent knows: looked at.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(f.settler.ingest(attrib(&path, &dpkg), now).is_empty());
    let first = next_look(&mut looked);
    // While that look is out, the deploy changes the mode again.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    assert!(f.settler.ingest(attrib(&path, &dpkg), now).is_empty());
    assert!(
        f.settler.looked(first, now).is_empty(),
        "a look the deploy has overtaken is taken again"
    );
    let second = next_look(&mut looked);
    let mut settled = f.settler.looked(second, now);
    settled.extend(f.settler.process_exited(71, now));
    assert_eq!(settled.len(), 1, "one decision for the deploy: {settled:?}");
    assert_eq!(file(&settled[0]).change, Some(FileChange::Accepted));
    let baseline = f
        .store()
        .get("managed", path.to_str().unwrap())
        .unwrap()
        .clone();
    assert_eq!(baseline.mode & 0o7777, 0o666, "the mode it left");
    pool.stop();
}
