//! The store on disk: records, history, objects, other writers.
use super::*;

#[test]
fn records_survive_reopening_and_share_objects() {
    let state = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (a, b) = (files.path().join("a.conf"), files.path().join("b.conf"));
    fs::write(&a, "same\n").unwrap();
    fs::write(&b, "same\n").unwrap();
    let mut store = BaselineStore::open(state.path()).unwrap();
    let first = store.record("p", &a, None).unwrap();
    let second = store.record("p", &b, None).unwrap();
    assert_eq!(first.sha256, second.sha256);
    assert_eq!(fs::read(store.object(&first)).unwrap(), b"same\n");

    let reopened = BaselineStore::open(state.path()).unwrap();
    assert_eq!(reopened.get("p", a.to_str().unwrap()), Some(&first));
    assert_eq!(reopened.list().count(), 2);
}

#[test]
fn an_index_written_before_history_existed_still_reads() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("baselines/policies");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("p.json"),
        r#"{"/etc/a": {"sha256": "ab", "mode": 420, "uid": 0, "gid": 0, "size": 2, "recorded": "2026-01-01T00:00:00Z"}}"#,
    )
    .unwrap();
    let store = BaselineStore::open(state.path()).unwrap();
    let b = store.get("p", "/etc/a").unwrap();
    assert_eq!((b.version, b.how), (1, How::Recorded));
}

#[test]
fn history_is_bounded_counted_and_unneeded_objects_go() {
    let state = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let a = files.path().join("a.conf");
    let counter = IntCounter::new("t", "t").unwrap();
    let mut store = BaselineStore::open(state.path())
        .unwrap()
        .with_history(2)
        .with_metrics(counter.clone());
    let mut hashes = Vec::new();
    for i in 0..5 {
        fs::write(&a, format!("v{i}\n")).unwrap();
        hashes.push(store.record("p", &a, None).unwrap().sha256);
    }
    let path = a.to_str().unwrap();
    let versions: Vec<u64> = store
        .versions("p", path)
        .iter()
        .map(|b| b.version)
        .collect();
    assert_eq!(versions, [5, 4, 3], "the current and two predecessors");
    assert_eq!(counter.get(), 2);
    assert!(
        !state
            .path()
            .join("baselines/objects")
            .join(&hashes[0])
            .exists()
    );
    assert!(
        state
            .path()
            .join("baselines/objects")
            .join(&hashes[2])
            .exists()
    );

    let back = store.reinstate("p", path, "3", How::Rollback).unwrap();
    assert_eq!(
        (back.version, back.sha256.as_str()),
        (6, hashes[2].as_str())
    );
    assert!(store.reinstate("p", path, "1", How::Rollback).is_err());
}

#[test]
fn a_change_by_another_process_is_read_at_the_next_look() {
    let state = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let a = files.path().join("a.conf");
    fs::write(&a, "one\n").unwrap();
    let mut agent = BaselineStore::open(state.path()).unwrap();
    agent.record("p", &a, None).unwrap();
    let mut command = BaselineStore::open(state.path()).unwrap();
    fs::write(&a, "two\n").unwrap();
    let two = command.record("p", &a, None).unwrap();
    agent.refresh();
    assert_eq!(agent.get("p", a.to_str().unwrap()), Some(&two));
}

#[test]
fn attributes_are_kept_as_an_object_bounded_and_counted() {
    use crate::fsio::xattr::Xattrs;
    let state = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let a = files.path().join("a.conf");
    fs::write(&a, "one\n").unwrap();
    let fd = fs::File::open(&a).unwrap();
    let set = |name: &str, value: &[u8]| {
        rustix::fs::fsetxattr(&fd, name, value, rustix::fs::XattrFlags::empty())
    };
    if set("user.reflex", b"deployed").is_err() {
        eprintln!("no user.* attributes on this filesystem; skipped");
        return;
    }
    let refused = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["reason"]).unwrap();
    let mut store = BaselineStore::open(state.path())
        .unwrap()
        .with_history(1)
        .with_max_xattr_bytes(64)
        .with_xattr_metrics(refused.clone());
    let first = store.record("p", &a, None).unwrap();
    let want = Xattrs::from_pairs([("user.reflex", "deployed")]);
    assert_eq!(first.xattrs_sha256.as_deref(), Some(want.digest().as_str()));
    assert_eq!(store.xattrs(&first).unwrap(), Some(want.clone()));
    let reopened = BaselineStore::open(state.path()).unwrap();
    assert_eq!(reopened.get("p", a.to_str().unwrap()), Some(&first));

    set("user.big", &[b'x'; 100]).unwrap();
    let second = store.record("p", &a, None).unwrap();
    assert_eq!(second.xattrs_sha256, None, "over the bound: not recorded");
    assert_eq!(refused.with_label_values(&["too_large"]).get(), 1);
    let object = state.path().join("baselines/objects").join(want.digest());
    assert!(object.exists(), "version 1 is still in the history");

    store.record("p", &a, None).unwrap();
    assert!(!object.exists(), "pruned with the last version needing it");
}
