//! What the other stages tell the file settler: a revert about to rename
//! a new file into place, done, or failed; a file policy's kill fuse
//! blown. Each makes the settler watch or look again.
use std::{path::Path, time::Instant};

use reflex_wire::FileKey;

use super::{FileSettler, Pending, RETRY, accept::Writers};
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

    /// Settles `path` once more at `at`, when it has a baseline to be
    /// compared with (a removed file has none: nothing to look for).
    fn look_again(&mut self, path: &str, at: Instant) {
        let kept = self
            .baselines
            .as_ref()
            .is_some_and(|s| s.of_path(path).next().is_some());
        if !kept {
            return;
        }
        if let Some(pending) = self.pending.get_mut(path) {
            pending.deadline = pending.deadline.min(at);
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
                deadline: at,
                hold_until: at,
                last_look: true,
                killed: false,
                by_name_only: false,
                by_fanotify_only: false,
                attrib_only: false,
                writers: Writers::default(),
                since: at,
            },
        );
    }
}
