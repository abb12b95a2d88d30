//! Pieces of a settled file record: the baselines and state it carries,
//! and the change that names it.
use std::{collections::BTreeMap, path::Path};

use super::baseline::BaselineStore;
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
/// file is there.
pub(super) fn after_state(
    path: &Path,
    state: Option<&fsio::FileState>,
    hash: bool,
) -> Option<Snapshot> {
    let state = state?;
    Some(Snapshot {
        sha256: hash.then(|| fsio::content_hash(path).ok()).flatten(),
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
