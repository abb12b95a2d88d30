//! `revert`: put a watched file back as its baseline says. The settled
//! event carries the baseline per policy; the content comes from the
//! baseline store's objects (the extended attributes too, when the baseline
//! recorded them), and the restore itself is [`fsio::restore`].
use std::{path::Path, time::Duration};

use tokio::sync::mpsc::UnboundedSender;

use super::evidence::EvidenceStore;
use crate::{
    events::file::{File, Snapshot},
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

/// Restores the file of `event` from `policy`'s baseline in the store under
/// `state_dir`; returns what was done, for the alert, and the evidence of
/// what it replaced when `keep` says where.
pub fn revert(
    event: &File,
    policy: &str,
    state_dir: &Path,
    keep: Keep<'_>,
    followups: Option<&UnboundedSender<Followup>>,
) -> (Result<String, String>, Option<Evidence>) {
    let mut evidence = None;
    let done = restore(event, policy, state_dir, keep, followups, &mut evidence);
    (done, evidence)
}

/// How long a revert waits for the settler to watch the new file before it
/// renames it into place anyway (a settler held up by a full queue must not
/// hold the actions stage up with it).
const WATCH_AHEAD_WAIT: Duration = Duration::from_millis(20);

fn restore(
    event: &File,
    policy: &str,
    state_dir: &Path,
    keep: Keep<'_>,
    followups: Option<&UnboundedSender<Followup>>,
    evidence: &mut Option<Evidence>,
) -> Result<String, String> {
    let path = event.path.as_deref().ok_or("the event names no file")?;
    let baseline = event
        .baseline
        .get(policy)
        .ok_or_else(|| format!("no baseline of {path} for policy {policy}"))?;
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
    if let Some((store, mode)) = keep {
        *evidence = Some(store.keep(Path::new(path), &object, mode));
    }
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
            if asked.is_ok() {
                let _ = acked.recv_timeout(WATCH_AHEAD_WAIT);
            }
        }
    };
    let key = fsio::restore_with(
        Path::new(path),
        &object,
        owner,
        xattrs.as_ref(),
        watch_ahead,
    )
    .map_err(|e| error_chain(&e))?;
    Ok(format!(
        "restored {path} (sha256 {}, inode {})",
        &sha256[..12.min(sha256.len())],
        key.ino
    ))
}

fn ownership(snapshot: &Snapshot) -> Ownership {
    Ownership {
        mode: snapshot.mode,
        uid: snapshot.uid,
        gid: snapshot.gid,
    }
}
