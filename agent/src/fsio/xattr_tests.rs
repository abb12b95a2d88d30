//! Encoding, digests, bounds, and setting attributes on real files (ACLs too).
use super::*;

#[test]
fn encoding_is_sorted_json_and_reads_back() {
    let x = Xattrs::from_pairs([("user.b", b"\x00\xff".to_vec()), ("user.a", b"1".to_vec())]);
    assert_eq!(x.encode(), br#"{"user.a":"31","user.b":"00ff"}"#);
    assert_eq!(Xattrs::decode(&x.encode()).unwrap(), x);
    assert_eq!(Xattrs::default().encode(), b"{}");
    assert_eq!(x.bytes(), 6 + 1 + 6 + 2);
    assert!(Xattrs::decode(br#"{"user.a":"3"}"#).is_err());
    assert!(Xattrs::decode(br#"{"user.a":"zz"}"#).is_err());
}

#[test]
fn differences_name_what_was_removed_added_and_changed() {
    let old = Xattrs::from_pairs([
        ("security.capability", "c"),
        ("user.a", "1"),
        ("user.k", "k"),
    ]);
    let new = Xattrs::from_pairs([("user.a", "2"), ("user.evil", "1"), ("user.k", "k")]);
    assert_eq!(
        old.differences(&new),
        ["-security.capability", "~user.a", "+user.evil"]
    );
    assert!(new.differences(&new).is_empty());
}

#[test]
fn the_digest_is_that_of_the_encoding_and_tells_sets_apart() {
    let x = Xattrs::from_pairs([("user.a", "1")]);
    assert_eq!(
        x.digest(),
        crate::fsio::hash_reader(&x.encode()[..]).unwrap()
    );
    assert_ne!(x.digest(), Xattrs::default().digest());
    assert_ne!(x.digest(), Xattrs::from_pairs([("user.a", "2")]).digest());
    assert_ne!(x.digest(), Xattrs::from_pairs([("user.b", "1")]).digest());
}

#[test]
fn a_name_that_is_not_utf8_never_digests_like_a_stored_set() {
    let stored = Xattrs::from_pairs([("user.\u{fffd}", "1")]);
    let mut hasher = Sha256::new();
    encode([(&b"user.\xff"[..], &b"1"[..])].into_iter(), |b| {
        hasher.update(b)
    });
    assert_ne!(hex(&hasher.finalize()), stored.digest());
}

/// user.* attributes on the test's own temporary file (a filesystem
/// without them, such as an old tmpfs, skips the test).
#[test]
fn reads_bounds_and_applies_on_a_real_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, "x").unwrap();
    let file = File::open(&path).unwrap();
    match fsetxattr(&file, "user.b", b"two", XattrFlags::empty()) {
        Err(Errno::OPNOTSUPP) => return,
        other => other.unwrap(),
    }
    fsetxattr(&file, "user.a", b"1", XattrFlags::empty()).unwrap();
    let XattrRead::Recorded(x) = read(&path, 1024).unwrap() else {
        panic!("within the bound");
    };
    assert_eq!(x, Xattrs::from_pairs([("user.a", "1"), ("user.b", "two")]));
    assert_eq!(digest(&path).unwrap(), x.digest());
    assert_eq!(read(&path, 8).unwrap(), XattrRead::TooLarge { bytes: 16 });

    let other = dir.path().join("g");
    std::fs::write(&other, "y").unwrap();
    let other_fd = File::open(&other).unwrap();
    fsetxattr(&other_fd, "user.evil", b"1", XattrFlags::empty()).unwrap();
    apply(&other_fd, &x).unwrap();
    assert_eq!(digest(&other).unwrap(), x.digest(), "extra one removed");

    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(digest(&link).is_err(), "a symlink is not followed");
}

/// `system.posix_acl_access` granting user 4242 read, mask `mask`
/// (version 2 header, then tag, permissions, id per entry, sorted).
fn acl(mask: u16) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 4242),
        (0x04, 4, u32::MAX),
        (0x10, mask, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        out.extend(tag.to_le_bytes());
        out.extend(perm.to_le_bytes());
        out.extend(id.to_le_bytes());
    }
    out
}

#[test]
fn a_restore_sets_the_access_acl_after_the_mode_and_checks_both() {
    use crate::fsio::{Ownership, restore};
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("app.conf");
    let content = dir.path().join("object");
    std::fs::write(&target, "evil").unwrap();
    std::fs::write(&content, "good").unwrap();
    let held = File::open(&target).unwrap();
    let me = rustix::fs::fstat(&held).unwrap();
    if fsetxattr(&held, ACL_ACCESS, &acl(4), XattrFlags::empty()).is_err() {
        eprintln!("no POSIX ACLs on this filesystem; skipped");
        return;
    }
    let XattrRead::Recorded(recorded) = read(&target, 1 << 16).unwrap() else {
        panic!("within the bound");
    };
    let mode = rustix::fs::fstat(&held).unwrap().st_mode & 0o7777;
    assert_eq!(mode & 0o070, 0o040, "the mask is the group bits");
    let owner = Ownership {
        mode,
        uid: me.st_uid,
        gid: me.st_gid,
    };
    std::fs::remove_file(&target).unwrap();
    std::fs::write(&target, "evil").unwrap();
    restore(&target, &content, owner, Some(&recorded)).unwrap();
    assert_eq!(digest(&target).unwrap(), recorded.digest());
    let now = std::fs::metadata(&target).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&now.permissions()) & 0o7777,
        mode
    );

    // A mode the ACL's mask contradicts cannot be restored as recorded:
    // refused, and nothing renamed over the file.
    let before = crate::fsio::state(&target).unwrap().unwrap().key;
    let wrong = Ownership {
        mode: mode | 0o020,
        ..owner
    };
    let err = restore(&target, &content, wrong, Some(&recorded)).unwrap_err();
    assert!(matches!(err, crate::fsio::FsError::Unlike { .. }), "{err}");
    assert_eq!(crate::fsio::state(&target).unwrap().unwrap().key, before);
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["app.conf", "object"], "no temporary file left");
}
