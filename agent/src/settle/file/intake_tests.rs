//! What the settler leaves to the filesystem pool besides plain looks: a
//! reloaded set's walks, a new file's identity, an acceptance's read; a
//! path that does not answer costs that path only.
use std::{fs, os::unix::fs::MetadataExt as _, path::Path, sync::Arc, time::Instant};

use super::{FileSettler, baseline::BaselineStore, intake::FsDone};
use crate::{
    events::{
        Body, Kind, ProcessContext, Record,
        file::{File, FileChange, MatchedBy},
    },
    fsio::{
        self,
        pool::{FsPool, PoolError, PoolMetrics, PoolSettings},
    },
    policy::PolicySet,
};

fn revert(paths: &[String]) -> Arc<PolicySet> {
    let list: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    let text = format!(
        "name: managed\nmode: enforce\non: {{ file: {{ paths: [{}] }} }}\ndo: [revert]\n",
        list.join(", ")
    );
    Arc::new(PolicySet::new(crate::policy::compile_valid(&text)))
}

fn hung() -> PoolError {
    PoolError::TimedOut(std::time::Duration::from_secs(5))
}

#[test]
fn a_reload_comes_into_force_once_walked_without_a_glob_that_hung() {
    let (a, b, state) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let app = a.path().join("app.conf");
    fs::write(&app, "good\n").unwrap();
    fs::write(b.path().join("other.conf"), "other\n").unwrap();
    let pool = FsPool::start(PoolSettings::default(), PoolMetrics::unregistered());
    let mut settler = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()))
        .with_pool(pool.clone());
    let mut done = settler.take_looked().unwrap();
    let app_name = app.display().to_string();
    assert!(
        settler
            .configure(&revert(std::slice::from_ref(&app_name)))
            .is_empty()
    );

    fs::write(&app, "drifted\n").unwrap();
    let glob_b = format!("{}/*.conf", b.path().display());
    let set = revert(&[app_name.clone(), glob_b.clone()]);
    assert!(
        settler.begin_reload(set.clone()).is_none(),
        "walked on the pool"
    );
    let mut out = Vec::new();
    for _ in 0..2 {
        assert!(
            settler.reloaded().is_none(),
            "not in force before its walks"
        );
        let answer = match done.blocking_recv().unwrap() {
            FsDone::Walk {
                generation, glob, ..
            } if glob == glob_b => FsDone::Walk {
                generation,
                glob,
                result: Err(hung()),
            },
            other => other,
        };
        out.extend(settler.looked(answer, Instant::now()));
    }
    assert!(
        settler.reloaded().is_some_and(|s| Arc::ptr_eq(&s, &set)),
        "in force once every walk answered"
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let Body::File(drift) = &out[0].body else {
        panic!("not a file record");
    };
    assert_eq!(drift.path.as_deref(), Some(app_name.as_str()));
    assert_eq!(drift.change, Some(FileChange::Drift));
    assert_eq!(drift.after.as_ref().unwrap().size, 8, "hashed on the pool");
    assert!(settler.watch().get(&app_name).is_some());
    assert!(
        settler
            .watch()
            .paths()
            .all(|p| !p.starts_with(&b.path().display().to_string())),
        "the glob that did not answer is left out"
    );
    pool.stop();
}

/// A creating open of `name` in `dir` by pid 7.
fn created(dir: &Path, name: &str) -> Record {
    let meta = fs::metadata(dir).unwrap();
    Record {
        time: String::new(),
        ktime_ns: 1,
        kind: Kind::File,
        process: ProcessContext {
            pid: 7,
            ..ProcessContext::default()
        },
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

#[test]
fn a_new_file_is_watched_by_name_at_once_and_by_identity_from_its_look() {
    let (dir, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(dir.path().join("app.conf"), "good\n").unwrap();
    let pool = FsPool::start(PoolSettings::default(), PoolMetrics::unregistered());
    let mut settler = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()))
        .with_pool(pool.clone());
    let mut done = settler.take_looked().unwrap();
    settler.configure(&revert(&[format!("{}/*.conf", dir.path().display())]));

    for (name, answers) in [("new.conf", true), ("stuck.conf", false)] {
        let path = dir.path().join(name);
        let key = path.display().to_string();
        fs::write(&path, "planted\n").unwrap();
        let now = Instant::now();
        assert!(settler.ingest(created(dir.path(), name), now).is_empty());
        let watched = settler.watch().get(&key).expect("watched at once");
        assert!(watched.last.is_none(), "not looked at on the settler");
        assert!(
            settler.process_exited(7, now).is_empty(),
            "looked at on the pool"
        );
        assert!(settler.looking(&key), "{name}");
        let answer = match done.blocking_recv().unwrap() {
            FsDone::Look(look) if !answers => FsDone::Look(super::look::Looked {
                path: look.path,
                result: Err(hung()),
            }),
            other => other,
        };
        let out = settler.looked(answer, now);
        assert_eq!(out.len(), 1, "{out:?}");
        let Body::File(file) = &out[0].body else {
            panic!("not a file record");
        };
        assert_eq!(file.change, Some(FileChange::Create), "{name}");
        assert_eq!(file.unverified.is_none(), answers, "{name}");
        let watched = settler.watch().get(&key).expect("still watched");
        assert_eq!(
            watched.last.is_some(),
            answers,
            "by identity once looked at"
        );
    }
    pool.stop();
}

fn dpkg(pid: u32) -> ProcessContext {
    let exe = "/usr/bin/dpkg";
    ProcessContext {
        pid,
        exe: Some(exe.into()),
        image: Some(Arc::new(crate::events::Ancestor {
            pid,
            start_ktime_ns: Some(1),
            exe: Some(exe.into()),
            filename: Some(exe.into()),
        })),
        ..ProcessContext::default()
    }
}

/// `change` of `path` by `writer`, as the probes report it.
fn by(path: &Path, change: FileChange, writer: ProcessContext) -> Record {
    let key = fsio::state(path).unwrap().unwrap().key;
    Record {
        time: String::new(),
        ktime_ns: crate::events::clock::BootClock::now_ns(),
        kind: Kind::File,
        process: writer,
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

#[test]
fn a_write_that_raced_an_acceptance_read_on_the_pool_withdraws_it() {
    let (dir, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let path = dir.path().join("app.conf");
    fs::write(&path, "v1\n").unwrap();
    let v1 = fsio::content_hash(&path).unwrap();
    let text = format!(
        "name: managed\nmode: enforce\non: {{ file: {{ paths: [\"{}\"] }} }}\naccept_from: {{ process: {{ exe: [\"/usr/bin/dpkg\"] }} }}\ndo: [revert]\n",
        path.display()
    );
    let pool = FsPool::start(PoolSettings::default(), PoolMetrics::unregistered());
    let mut settler = FileSettler::new(None, Some(BaselineStore::open(state.path()).unwrap()))
        .with_pool(pool.clone());
    let mut done = settler.take_looked().unwrap();
    settler.configure(&PolicySet::new(crate::policy::compile_valid(&text)));
    let mut answer = |settler: &mut FileSettler, now| {
        let look = done.blocking_recv().unwrap();
        settler.looked(look, now)
    };

    // The deploy writes and closes; it is taken at the end of its hold.
    let start = Instant::now();
    assert!(
        settler
            .ingest(by(&path, FileChange::Write, dpkg(71)), start)
            .is_empty()
    );
    fs::write(&path, "v2\n").unwrap();
    settler.ingest(by(&path, FileChange::CloseWrite, dpkg(71)), start);
    assert!(
        answer(&mut settler, start).is_empty(),
        "held for the deploy"
    );
    // Stamped before the acceptance's read, an ordinary writer's event
    // reaches the settler while the read is on the pool.
    let cat = ProcessContext {
        pid: 70,
        exe: Some("/usr/bin/cat".into()),
        ..ProcessContext::default()
    };
    let early = by(&path, FileChange::CloseWrite, cat);
    let due = start + super::DEPLOY_HOLD;
    assert!(settler.expire(due).is_empty(), "read on the pool");
    assert!(settler.ingest(early, due).is_empty(), "waits for the read");
    let out = answer(&mut settler, due);
    assert_eq!(out.len(), 1, "{out:?}");
    let Body::File(accepted) = &out[0].body else {
        panic!("not a file record");
    };
    assert_eq!(accepted.change, Some(FileChange::Accepted));
    let out = answer(&mut settler, due);
    assert_eq!(out.len(), 1, "the raced write is judged: {out:?}");
    let Body::File(raced) = &out[0].body else {
        panic!("not a file record");
    };
    assert_eq!(
        raced.baseline["managed"].sha256.as_deref(),
        Some(v1.as_str()),
        "back to the version before the acceptance"
    );
    pool.stop();
}
