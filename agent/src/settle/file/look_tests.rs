//! Looks on the filesystem pool: one per file in flight, changes that
//! arrive meanwhile settled after it, a hung file reported once.
use std::{fs, path::Path, time::Instant};

use super::{
    FileSettler,
    baseline::BaselineStore,
    look::{Look, Looked},
};
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

fn settler(dir: &Path, state: &Path) -> FileSettler {
    fs::write(dir.join("app.conf"), "good\n").unwrap();
    let text = format!(
        "name: managed\nmode: enforce\non: {{ file: {{ paths: [\"{}/app.conf\"] }} }}\ndo: [revert]\n",
        dir.display()
    );
    let mut settler = FileSettler::new(None, Some(BaselineStore::open(state).unwrap()));
    settler.configure(&PolicySet::new(crate::policy::compile_valid(&text)));
    settler
}

fn closed(path: &Path) -> Record {
    let key = fsio::state(path).unwrap().unwrap().key;
    Record {
        time: String::new(),
        ktime_ns: 1,
        kind: Kind::File,
        process: ProcessContext {
            pid: 42,
            ..ProcessContext::default()
        },
        body: Body::File(File {
            change: Some(FileChange::CloseWrite),
            dev: key.dev,
            ino: key.ino,
            fd: 3,
            matched_by: MatchedBy::Inode,
            ..File::default()
        }),
    }
}

fn file(record: &Record) -> &File {
    match &record.body {
        Body::File(f) => f,
        _ => panic!("not a file record"),
    }
}

#[test]
fn a_change_during_a_look_is_settled_after_it() {
    let (dir, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = FsPool::start(PoolSettings::default(), PoolMetrics::unregistered());
    let mut settler = settler(dir.path(), state.path()).with_pool(pool.clone());
    let mut looked = settler.take_looked().unwrap();
    let path = dir.path().join("app.conf");
    let name = path.display().to_string();

    fs::write(&path, "evil 1\n").unwrap();
    assert!(
        settler.ingest(closed(&path), Instant::now()).is_empty(),
        "looked at on the pool"
    );
    assert!(settler.looking(&name));
    // The look is done but not yet taken in: still in flight for the
    // settler when the next change arrives.
    let first = looked.blocking_recv().unwrap();
    fs::write(&path, "evil 22\n").unwrap();
    assert!(settler.ingest(closed(&path), Instant::now()).is_empty());
    assert_eq!(
        settler.next_deadline(),
        None,
        "waits for the look in flight"
    );
    assert!(looked.try_recv().is_err(), "one look per file at a time");
    let out = settler.looked(first, Instant::now());
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(file(&out[0]).after.as_ref().unwrap().size, 7);
    assert!(settler.looking(&name), "the later change's look went out");
    let second = looked.blocking_recv().unwrap();
    let out = settler.looked(second, Instant::now());
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(file(&out[0]).after.as_ref().unwrap().size, 8);
    pool.stop();
}

#[test]
fn a_file_that_does_not_answer_is_reported_once_until_it_does() {
    let (dir, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = FsPool::start(PoolSettings::default(), PoolMetrics::unregistered());
    let mut settler = settler(dir.path(), state.path()).with_pool(pool.clone());
    let mut looked = settler.take_looked().unwrap();
    let path = dir.path().join("app.conf");
    let name = path.display().to_string();
    fs::write(&path, "evil\n").unwrap();
    settler.ingest(closed(&path), Instant::now());
    let _real = looked.blocking_recv().unwrap();
    let timed_out = || Looked {
        path: name.clone(),
        result: Err(PoolError::TimedOut(std::time::Duration::from_secs(5))),
    };

    let out = settler.looked(timed_out(), Instant::now());
    assert_eq!(out.len(), 1, "{out:?}");
    let reported = file(&out[0]);
    assert!(
        reported
            .unverified
            .as_deref()
            .unwrap()
            .contains("did not answer")
    );
    assert!(reported.after.is_none() && !reported.baseline.is_empty());

    // Looked at again later; while it still hangs nothing more is said.
    let retry = settler.next_deadline().expect("a retry is due");
    let later = retry + std::time::Duration::from_millis(1);
    assert!(settler.expire(later).is_empty());
    let _again = looked.blocking_recv().unwrap();
    assert!(settler.looked(timed_out(), later).is_empty());

    // It answers: the change is settled as any other.
    settler.expire(later + super::RETRY * 2);
    let answer = Looked {
        path: name.clone(),
        result: Ok(Look::take(&path, true)),
    };
    let _pending = looked.blocking_recv().unwrap();
    let out = settler.looked(answer, later + super::RETRY * 2);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(file(&out[0]).unverified.is_none());
    assert_eq!(file(&out[0]).after.as_ref().unwrap().size, 5);
    pool.stop();
}
