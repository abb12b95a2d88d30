//! Alerts on stdout, written by a thread of their own: a reader that stops
//! (a stalled journal, a pipe nobody drains) fills a bounded queue and
//! loses lines, counted, but never holds up the actions stage and with it
//! reverts and kills.
use std::{
    io::Write as _,
    sync::{
        Arc, OnceLock,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::Duration,
};

use prometheus::IntCounter;

use crate::limits::LogEvery;

/// Alert lines waiting for stdout by default.
pub const DEFAULT_QUEUE: usize = 1024;

/// How often lost lines are logged (they are all counted).
const DROP_LOG_PERIOD: Duration = Duration::from_secs(10);

/// How long the agent waits at exit for queued lines to be written.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// The sending end of the stdout writer. Dropping it lets the writer
/// finish what is queued (bounded by [`FLUSH_AT_EXIT`]).
pub struct StdoutLines {
    tx: Option<SyncSender<Vec<u8>>>,
    /// Closed by the writer when it has written everything.
    done: Option<Receiver<()>>,
    /// Lines lost to a full queue.
    dropped: Arc<OnceLock<IntCounter>>,
    /// Lines the writer failed to write (a closed stdout).
    failed: Arc<OnceLock<IntCounter>>,
    drop_log: LogEvery,
}

impl StdoutLines {
    /// Starts the writer thread with room for `queue` lines.
    pub fn start(queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(queue.max(1));
        let (done_tx, done) = sync_channel::<()>(0);
        let failed: Arc<OnceLock<IntCounter>> = Arc::new(OnceLock::new());
        let counted = failed.clone();
        std::thread::Builder::new()
            .name("reflex-stdout".into())
            .spawn(move || {
                write_all(rx, &counted);
                drop(done_tx);
            })?;
        Ok(Self {
            tx: Some(tx),
            done: Some(done),
            dropped: Arc::default(),
            failed,
            drop_log: LogEvery::new(DROP_LOG_PERIOD),
        })
    }

    /// Counts lines lost to a full queue in `full` and lines that could
    /// not be written in `failed`.
    pub fn with_dropped(self, full: IntCounter, failed: IntCounter) -> Self {
        let _ = self.dropped.set(full);
        let _ = self.failed.set(failed);
        self
    }

    /// Queues `line` (ending in a newline); lost and counted when the
    /// queue is full.
    pub fn push(&self, line: Vec<u8>) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                if let Some(dropped) = self.dropped.get() {
                    dropped.inc();
                }
                if let Some(held) = self.drop_log.pass() {
                    tracing::warn!(
                        earlier_unlogged = held,
                        "stdout is not read fast enough: an alert line is lost there (counted in reflex_alerts_dropped_total{{sink=\"stdout\"}}; alerts.jsonl and remote sinks have it)"
                    );
                }
            }
        }
    }
}

impl Drop for StdoutLines {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(FLUSH_AT_EXIT);
        }
    }
}

fn write_all(rx: Receiver<Vec<u8>>, dropped: &OnceLock<IntCounter>) {
    let mut failing = false;
    for line in rx {
        let mut out = std::io::stdout().lock();
        match out.write_all(&line).and_then(|()| out.flush()) {
            Ok(()) => failing = false,
            Err(err) => {
                if let Some(dropped) = dropped.get() {
                    dropped.inc();
                }
                if !failing {
                    failing = true;
                    tracing::warn!(%err, "writing an alert to stdout; lost lines are counted in reflex_alerts_dropped_total{{sink=\"stdout\"}}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_loses_lines_counted_without_waiting() {
        let (tx, rx) = sync_channel(2);
        let dropped = IntCounter::new("d", "d").unwrap();
        let counter = Arc::new(OnceLock::new());
        let _ = counter.set(dropped.clone());
        let lines = StdoutLines {
            tx: Some(tx),
            done: None,
            dropped: counter,
            failed: Arc::default(),
            drop_log: LogEvery::new(DROP_LOG_PERIOD),
        };
        for _ in 0..5 {
            lines.push(b"x\n".to_vec());
        }
        assert_eq!(dropped.get(), 3);
        assert_eq!(rx.try_iter().count(), 2);
    }
}
