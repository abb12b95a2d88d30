//! What the other stages tell the file settler: a revert about to rename
//! a new file into place, done, or failed; a file policy's kill fuse
//! blown. Each makes the settler watch or look again.
use std::{path::Path, time::Instant};

use reflex_wire::FileKey;

use super::{FileSettler, NOTICE_GRACE, Pending, RETRY, accept::Writers};
use crate::{
    events::{Body, Record, file::FileChange},
    fsio::FileState,
};

impl FileSettler {
    /// Watches `key`, about to be renamed over `path` by a revert.
    pub fn expect(&mut self, path: &str, key: FileKey, temp: &Path) {
        self.watch.expect(path, key, temp);
    }

    /// The kill fuse of `policy` blew: its kills at open stop in the kernel.
    pub fn kills_off(&mut self, policy: &str) {
        self.watch.kills_off(policy);
    }

    /// Follows `path` to the file a revert put there (a new inode), `now`
    /// as the revert saw it last.
    pub fn restored(&mut self, path: &str, now: Option<FileState>) {
        // After a restore, anything but the baseline is a new change, even
        // the very file (inode, times) the last change left.
        self.recent.forget(path);
        self.watch.refresh_to(path, now);
        // A write between the rename and the moment the new file was
        // watched (a busy settler) raised nothing: look at it once now.
        self.look_again(path, Instant::now());
        self.forget_gone(path);
    }

    /// A revert of `path` failed (its temporary file swapped again and
    /// again, the file made immutable, its directory gone): what is there
    /// is looked at again after [`RETRY`], and answered again if it still
    /// differs, rather than left as a repeat of the change that failed.
    /// `seen` is what the revert found there, if it could look (a hung
    /// filesystem may not answer: the next look settles it then).
    pub fn revert_failed(&mut self, path: &str, seen: Option<Option<FileState>>) {
        self.recent.forget(path);
        if let Some(now) = seen {
            self.watch.refresh_to(path, now);
        }
        self.look_again(path, Instant::now() + RETRY);
    }

    /// Forgets `path` from the watch list when its file is gone, nothing
    /// is pending for it, and no baseline keeps it (a glob's file removed,
    /// or a new file a revert took away).
    pub(super) fn forget_gone(&mut self, path: &str) {
        let kept = self
            .baselines
            .as_ref()
            .is_some_and(|s| s.of_path(path).next().is_some());
        if !kept && !self.pending.contains_key(path) && !self.looking(path) {
            self.watch.forget_if_gone(path);
        }
    }

    /// Settles `path` once more at `at`, when it has a baseline to be
    /// compared with (a removed file has none: nothing to look for). The
    /// probes' or fanotify's record of a write arriving before then
    /// replaces the look, so the change is judged whole and by its writer.
    fn look_again(&mut self, path: &str, at: Instant) {
        let kept = self
            .baselines
            .as_ref()
            .is_some_and(|s| s.of_path(path).next().is_some());
        if !kept {
            return;
        }
        if self.pending.contains_key(path) {
            // A change already met after the rename settles by its own
            // rules (its writer's close, the hold), not now and mid-write.
            return;
        }
        let record = Record {
            time: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            ktime_ns: crate::events::clock::BootClock::now_ns(),
            kind: crate::events::Kind::File,
            process: Default::default(),
            body: Body::File(crate::events::file::File {
                change: Some(FileChange::Write),
                fd: -1,
                ..Default::default()
            }),
        };
        self.pending.insert(
            path.to_string(),
            Pending {
                record,
                changes: vec![FileChange::Write],
                writer: 0,
                deadline: at + NOTICE_GRACE,
                hold_until: at + NOTICE_GRACE,
                last_look: true,
                killed: false,
                by_name_only: false,
                by_fanotify_only: false,
                attrib_only: false,
                writers: Writers::default(),
                since: at,
                placeholder: true,
            },
        );
    }
}
