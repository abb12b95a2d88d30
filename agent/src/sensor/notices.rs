//! fanotify notices into raw file records, beside the probes' records.
use reflex_wire::FileKey;

use super::Pipeline;
use crate::{
    events::{
        Body, Kind, Record,
        clock::BootClock,
        file::{File, FileChange, MatchedBy},
    },
    fanotify::{DecodeError, Marked, Notice, NoticeReader},
};

impl Pipeline {
    /// Turns a fanotify notice into a raw file record, or for a queue
    /// overflow into one per marked file, so that each is looked at again.
    pub(super) fn notice(&mut self, notice: Notice, batch: &mut Vec<Record>) {
        let Some(marks) = &self.marks else { return };
        if self
            .kinds
            .as_ref()
            .is_some_and(|k| !k.contains(&Kind::File))
        {
            return;
        }
        let ktime_ns = BootClock::now_ns();
        if notice.mask & libc::FAN_Q_OVERFLOW != 0 {
            self.metrics
                .lost
                .with_label_values(&["fanotify", "overflow", "file"])
                .inc();
            tracing::warn!("fanotify queue overflowed; looking at every watched file again");
            for key in marks.keys() {
                batch.push(self.file_record(ktime_ns, 0, key, FileChange::Attrib));
            }
            return;
        }
        let Some(marked) = notice.handle.as_ref().and_then(|h| marks.marked(h)) else {
            tracing::debug!(
                mask = notice.mask,
                pid = notice.pid,
                "fanotify notice about nothing marked"
            );
            return;
        };
        tracing::debug!(
            mask = notice.mask,
            pid = notice.pid,
            ?marked,
            "fanotify notice"
        );
        if notice.pid == self.agent {
            return;
        }
        // Most telling first: one record per notice is enough, as the
        // settler looks at the file itself.
        let change = if notice.mask & libc::FAN_DELETE_SELF != 0 {
            FileChange::Unlink
        } else if notice.mask & libc::FAN_MOVE_SELF != 0 {
            FileChange::Rename
        } else if notice.mask & libc::FAN_CLOSE_WRITE != 0 {
            FileChange::CloseWrite
        } else if notice.mask & libc::FAN_MODIFY != 0 {
            FileChange::Write
        } else {
            FileChange::Attrib
        };
        let record = match marked {
            Marked::File(key) => self.file_record(ktime_ns, notice.pid, key, change),
            Marked::Dir(dir) => {
                let mut record = self.file_record(ktime_ns, notice.pid, Default::default(), change);
                if let Body::File(file) = &mut record.body {
                    file.dir_dev = dir.dev;
                    file.dir_ino = dir.ino;
                }
                record
            }
        };
        if record.process.ancestors.iter().any(|a| a.pid == self.agent)
            || record.process.ppid == self.agent
        {
            return; // a hook's change
        }
        batch.push(record);
    }

    fn file_record(&mut self, ktime_ns: u64, pid: u32, key: FileKey, change: FileChange) -> Record {
        let process = match pid {
            0 => Default::default(),
            pid if self.table.get(pid).is_none() => {
                match self.exited.iter().rev().find(|p| p.pid == pid) {
                    Some(gone) => gone.clone(),
                    None => self.table.context_of(pid),
                }
            }
            pid => self.table.context_of(pid),
        };
        self.metrics.fanotify_notices.inc();
        Record {
            time: humantime::format_rfc3339_nanos(self.clock.to_system_time(ktime_ns)).to_string(),
            ktime_ns,
            kind: Kind::File,
            process,
            body: Body::File(File {
                change: Some(change),
                changes: vec![change],
                dev: key.dev,
                ino: key.ino,
                fd: -1,
                matched_by: MatchedBy::Fanotify,
                ..File::default()
            }),
        }
    }
}

/// The next fanotify read, or never when there is no fanotify.
pub(super) async fn next_notices(
    notices: &mut Option<NoticeReader>,
) -> std::io::Result<Result<Vec<Notice>, DecodeError>> {
    match notices {
        Some(reader) => reader.read().await,
        None => std::future::pending().await,
    }
}
