//! Pieces of a settled file record: the baselines and state it carries,
//! and the change that names it.
use std::{collections::BTreeMap, path::Path};

use super::baseline::{BaselineStore, MAX_BASELINE_BYTES};
use crate::{
    events::file::{FileChange, Snapshot},
    fsio,
};

/// The baseline of `path` per policy, as events carry it.
pub(super) fn snapshots(store: &BaselineStore, path: &str) -> BTreeMap<String, Snapshot> {
    store
        .of_path(path)
        .map(|(policy, b)| (policy.to_string(), b.snapshot()))
        .collect()
}

/// `state` of `path` as events carry it, with the content hash and the
/// digest of the extended attributes when `hash`; `None` when no regular
/// file is there. A file larger than any baseline can be is not hashed: it
/// differs by its size already, and reading gigabytes a user wrote would
/// hold the filesystem's look past its deadline.
pub(super) fn after_state(
    path: &Path,
    state: Option<&fsio::FileState>,
    hash: bool,
) -> Option<Snapshot> {
    let state = state?;
    Some(Snapshot {
        sha256: (hash && state.size <= MAX_BASELINE_BYTES)
            .then(|| fsio::content_hash(path).ok())
            .flatten(),
        mode: state.mode,
        uid: state.uid,
        gid: state.gid,
        size: state.size,
        xattrs_sha256: hash.then(|| fsio::xattr::digest(path).ok()).flatten(),
    })
}

/// The change that says most about what happened.
pub(super) fn strongest(changes: &[FileChange]) -> FileChange {
    const ORDER: [FileChange; 12] = [
        FileChange::Drift,
        FileChange::Accepted,
        FileChange::Unlink,
        FileChange::Rename,
        FileChange::Truncate,
        FileChange::Create,
        FileChange::Write,
        FileChange::CloseWrite,
        FileChange::Chmod,
        FileChange::Chown,
        FileChange::Link,
        FileChange::Attrib,
    ];
    ORDER
        .into_iter()
        .find(|c| changes.contains(c))
        .unwrap_or(FileChange::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_larger_than_any_baseline_is_not_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_BASELINE_BYTES + 1).unwrap(); // sparse: no disk
        let state = fsio::state(&path).unwrap();
        let after = after_state(&path, state.as_ref(), true).unwrap();
        assert_eq!(after.size, MAX_BASELINE_BYTES + 1);
        assert!(after.sha256.is_none());
        file.set_len(10).unwrap();
        let state = fsio::state(&path).unwrap();
        let after = after_state(&path, state.as_ref(), true).unwrap();
        assert!(after.sha256.is_some(), "a file within the bound is hashed");
    }
}
