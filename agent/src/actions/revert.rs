//! `revert`: put a watched file back as its baseline says. The settled
//! event carries the baseline per policy; the content comes from the
//! baseline store's objects (the extended attributes too, when the baseline
//! recorded them), and the restore itself is [`fsio::restore`].
use std::{path::Path, time::Duration};

use reflex_wire::FileKey;
use tokio::sync::mpsc::UnboundedSender;

use super::evidence::EvidenceStore;
use crate::{
    events::file::{File, FileChange, Snapshot},
    fsio::{self, Ownership},
    logging::error_chain,
    policy::accept::EvidenceMode,
    settle::{
        Followup,
        file::baseline::{load_xattrs, object_path},
    },
    sinks::alert::Evidence,
};

/// Where a revert keeps what it rejects, and how much of it.
pub type Keep<'a> = Option<(&'a EvidenceStore, EvidenceMode)>;

/// Whether a path is one the reverting policy covers.
pub type Covers<'a> = dyn Fn(&str) -> bool + 'a;

/// Restores the file of `event` from `policy`'s baseline in the store under
/// `state_dir`, or removes it when it was created and `policy` has no
/// baseline of it (only where `covers` says the policy's paths reach);
/// returns what was done, for the alert, and the evidence of what it
/// replaced when `keep` says where.
pub fn revert(
    event: &File,
    (policy, covers): (&str, &Covers<'_>),
    state_dir: &Path,
    keep: Keep<'_>,
    followups: Option<&UnboundedSender<Followup>>,
) -> (Result<String, String>, Option<Evidence>) {
    let mut evidence = None;
    let done = restore(
        event,
        (policy, covers),
        state_dir,
        keep,
        followups,
        &mut evidence,
    );
    (done, evidence)
}

/// How long a revert waits for the settler to watch the new file before it
/// renames it into place anyway (a settler held up by a full queue must not
/// hold the actions stage up with it).
const WATCH_AHEAD_WAIT: Duration = Duration::from_millis(20);

fn restore(
    event: &File,
    (policy, covers): (&str, &Covers<'_>),
    state_dir: &Path,
    keep: Keep<'_>,
    followups: Option<&UnboundedSender<Followup>>,
    evidence: &mut Option<Evidence>,
) -> Result<String, String> {
    let path = event.path.as_deref().ok_or("the event names no file")?;
    let Some(baseline) = event.baseline.get(policy) else {
        if event.changes.contains(&FileChange::Create) {
            return remove(event, path, covers, keep, evidence);
        }
        return Err(format!("no baseline of {path} for policy {policy}"));
    };
    let sha256 = baseline
        .sha256
        .as_deref()
        .ok_or_else(|| format!("the baseline of {path} has no content hash"))?;
    let owner = ownership(baseline);
    let xattrs_sha256 = baseline.xattrs_sha256.as_deref();
    if fsio::has_state(Path::new(path), sha256, baseline.size, owner, xattrs_sha256)
        .unwrap_or(false)
    {
        return Ok(format!("{path} already matches its baseline"));
    }
    // A baseline without attributes (recorded before they were) leaves the
    // new file's own, as restores did then.
    let xattrs = xattrs_sha256
        .map(|digest| load_xattrs(state_dir, digest))
        .transpose()
        .map_err(|e| error_chain(&e))?;
    let object = object_path(state_dir, sha256);
    // What the file holds is read before it is replaced; keeping a copy
    // and the diff come after the restore, off the way to it.
    let captured = keep.map(|(store, mode)| (store, mode, store.capture(Path::new(path), mode)));
    // The settler watches the new file before it takes the path, so a write
    // that follows the restore at once is seen like any other.
    let watch_ahead = |key, temp: &Path| {
        if let Some(tx) = followups {
            let (ack, acked) = std::sync::mpsc::sync_channel(1);
            let asked = tx.send(Followup::Restoring {
                path: path.to_string(),
                key,
                temp: temp.to_path_buf(),
                ack,
            });
            if asked.is_ok() && acked.recv_timeout(WATCH_AHEAD_WAIT).is_err() {
                tracing::debug!(
                    path,
                    "the settler did not watch the restored file in time; renamed anyway"
                );
            }
        }
    };
    let restored = fsio::restore_with(
        Path::new(path),
        &object,
        owner,
        xattrs.as_ref(),
        watch_ahead,
    );
    if let Some((store, mode, captured)) = captured {
        *evidence = Some(store.finish(captured, Some(&object), mode));
    }
    let key = restored.map_err(|e| error_chain(&e))?;
    Ok(format!(
        "restored {path} (sha256 {}, inode {})",
        &sha256[..12.min(sha256.len())],
        key.ino
    ))
}

/// Undoes the creation of a file the policy has no baseline of (its writer
/// was not authorised, or it appeared while no agent ran): keeps what it
/// holds as evidence and removes it, safely ([`fsio::remove_created`]).
/// Nothing is removed while another policy keeps a baseline of the file:
/// for that policy it belongs there.
fn remove(
    event: &File,
    path: &str,
    covers: &Covers<'_>,
    keep: Keep<'_>,
    evidence: &mut Option<Evidence>,
) -> Result<String, String> {
    // The settler only names covered paths; a removal checks it again, as
    // nothing outside the policy's paths may ever go.
    if !covers(path) {
        return Err(format!(
            "not removed: {path} is not among the policy's paths"
        ));
    }
    if let Some(other) = event.baseline.keys().next() {
        return Err(format!(
            "not removed: policy {other} keeps a baseline of {path}"
        ));
    }
    let expected = (event.ino != 0).then_some(FileKey {
        dev: event.dev,
        _pad: 0,
        ino: event.ino,
    });
    let file = Path::new(path);
    if fsio::state(file).ok().flatten().is_none() {
        return Ok(format!("{path} is already gone"));
    }
    if let Some((store, mode)) = keep {
        *evidence = Some(store.keep(file, None, mode));
    }
    fsio::remove_created(file, expected).map_err(|e| error_chain(&e))?;
    let kept = evidence
        .as_ref()
        .and_then(|e| {
            e.kept
                .as_deref()
                .map(|k| format!("; its content is kept in {k}"))
        })
        .or_else(|| {
            evidence.as_ref().and_then(|e| {
                e.sha256
                    .as_deref()
                    .map(|h| format!("; only its hash is kept (sha256 {h})"))
            })
        })
        .unwrap_or_default();
    Ok(format!(
        "removed {path}: created by a writer the policy does not authorise, it has no baseline{kept}"
    ))
}

fn ownership(snapshot: &Snapshot) -> Ownership {
    Ownership {
        mode: snapshot.mode,
        uid: snapshot.uid,
        gid: snapshot.gid,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::actions::evidence::EvidenceSettings;

    fn created_event(path: &Path) -> File {
        let key = fsio::state(path).unwrap().unwrap().key;
        File {
            path: Some(path.display().to_string()),
            change: Some(FileChange::Create),
            changes: vec![FileChange::Create, FileChange::CloseWrite],
            dev: key.dev,
            ino: key.ino,
            ..File::default()
        }
    }

    #[test]
    fn a_created_file_without_a_baseline_is_removed_with_its_evidence() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let evil = dir.path().join("evil.conf");
        fs::write(&evil, "backdoor=1\n").unwrap();
        let event = created_event(&evil);
        let store = EvidenceStore::new(state.path(), EvidenceSettings::default());
        let everywhere = |_: &str| true;
        let (done, evidence) = revert(
            &event,
            ("managed", &everywhere),
            state.path(),
            Some((&store, EvidenceMode::Diff)),
            None,
        );
        let done = done.unwrap();
        assert!(!evil.exists(), "{done}");
        let evidence = evidence.unwrap();
        let kept = evidence.kept.unwrap();
        assert!(done.contains("removed") && done.contains(&kept), "{done}");
        assert_eq!(fs::read(&kept).unwrap(), b"backdoor=1\n");
        assert!(evidence.diff.unwrap().contains("+backdoor=1"));
    }

    #[test]
    fn nothing_is_removed_outside_the_policy_or_that_another_policy_keeps() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.conf");
        fs::write(&file, "x\n").unwrap();
        let nowhere = |_: &str| false;
        let (done, _) = revert(
            &created_event(&file),
            ("managed", &nowhere),
            state.path(),
            None,
            None,
        );
        assert!(done.unwrap_err().contains("not among"));
        let mut kept_elsewhere = created_event(&file);
        kept_elsewhere
            .baseline
            .insert("other".into(), Snapshot::default());
        let everywhere = |_: &str| true;
        let (done, _) = revert(
            &kept_elsewhere,
            ("managed", &everywhere),
            state.path(),
            None,
            None,
        );
        assert!(done.unwrap_err().contains("policy other keeps"));
        // A change to a file without a baseline that was not a creation
        // (a file too large to record) is not removed either.
        let mut written = created_event(&file);
        written.changes = vec![FileChange::CloseWrite];
        let (done, _) = revert(&written, ("managed", &everywhere), state.path(), None, None);
        assert!(done.unwrap_err().contains("no baseline"));
        assert!(file.exists());
    }
}
