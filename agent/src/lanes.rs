//! Two lanes through every stage (sensor → settler → engine → actions), so
//! that a flood of one kind of event never queues the changes of watched
//! files behind it.
//!
//! The split is by what a delay costs. The **file** lane carries file
//! records (the `file` ring buffer and fanotify notices), the changes they
//! settle into, drift, and the exits of processes that wrote a watched file
//! (told to the file side only, so that their held changes settle at once;
//! the exit event itself travels in the bulk lane). A late file change is a
//! late revert. The **bulk** lane carries the rest: exec, exit, fork,
//! connect and CPU events. Its floods (a `connect()` loop under a monitor
//! policy, an exec storm) cost alerts time, never a revert. A process's
//! context is complete before either lane: the process table lives in the
//! sensor, so a file record never waits for an exec in the other lane.
//!
//! Every stage takes from the file lane first ([`LaneReceiver::recv`]), but
//! after [`FILE_BURST`] file items in a row it gives a waiting bulk item
//! its turn, so neither lane starves. A stage takes a bulk item only when
//! it holds room for what it passes on in the bulk lane ([`Taken::Bulk`]
//! carries the permit): a full bulk lane downstream holds back the bulk
//! lane only, and the stage goes on serving files.
//!
//! Policy sets travel in-band in both lanes, at the same point of each
//! lane's stream, so each lane's events are judged by one whole set; the
//! engine keeps one planner (throttles, kill fuses) for both and re-arms
//! the fuses once per new set, whichever lane brings it first.
use prometheus::IntGauge;
use tokio::sync::mpsc;

use crate::events::{Body, Kind, Record};

/// File items a stage takes in a row before a waiting bulk item gets a turn.
pub const FILE_BURST: usize = 64;

/// Items waiting between the settler and the engine, and between the
/// engine and actions, per lane, by default. Small: the sensor's queues in
/// front absorb bursts, and a slow stage holds the ones before it back
/// rather than growing memory.
pub const DEFAULT_STAGE_QUEUE: usize = 1024;

/// One of the two lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// File changes: what reverts watched files.
    File,
    /// Everything else.
    Bulk,
}

impl Lane {
    /// Both lanes, file first.
    pub const ALL: [Lane; 2] = [Lane::File, Lane::Bulk];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Lane::File => "file",
            Lane::Bulk => "bulk",
        }
    }

    /// The lane a record travels in.
    pub fn of(record: &Record) -> Self {
        match (&record.body, record.kind) {
            (Body::File(_), _) | (_, Kind::File) => Lane::File,
            _ => Lane::Bulk,
        }
    }
}

/// The sending ends of a pair of lanes.
#[derive(Clone, Debug)]
pub struct LaneSenders<T> {
    /// The file lane.
    pub file: mpsc::Sender<T>,
    /// The bulk lane.
    pub bulk: mpsc::Sender<T>,
}

impl<T> LaneSenders<T> {
    /// The sender of `lane`.
    pub fn lane(&self, lane: Lane) -> &mpsc::Sender<T> {
        match lane {
            Lane::File => &self.file,
            Lane::Bulk => &self.bulk,
        }
    }
}

/// What [`LaneReceiver::recv`] took.
pub enum Taken<'a, T, U> {
    /// An item of the file lane.
    File(T),
    /// An item of the bulk lane, with room for one item in the bulk lane
    /// downstream (when the stage has one).
    Bulk(T, Option<mpsc::Permit<'a, U>>),
}

/// The receiving ends of a pair of lanes: file first, bulk not starved.
#[derive(Debug)]
pub struct LaneReceiver<T> {
    file: Option<mpsc::Receiver<T>>,
    bulk: Option<mpsc::Receiver<T>>,
    /// File items taken in a row while the bulk lane may have waited.
    run: usize,
    gauges: Option<[IntGauge; 2]>,
}

/// A pair of lanes holding `file` and `bulk` items at most.
pub fn channel<T>(file: usize, bulk: usize) -> (LaneSenders<T>, LaneReceiver<T>) {
    let (file_tx, file_rx) = mpsc::channel(file.max(1));
    let (bulk_tx, bulk_rx) = mpsc::channel(bulk.max(1));
    (
        LaneSenders {
            file: file_tx,
            bulk: bulk_tx,
        },
        LaneReceiver {
            file: Some(file_rx),
            bulk: Some(bulk_rx),
            run: 0,
            gauges: None,
        },
    )
}

impl<T> LaneReceiver<T> {
    /// Shows the items waiting in each lane on `gauges` (file, bulk),
    /// updated at each take.
    pub fn with_gauges(mut self, gauges: [IntGauge; 2]) -> Self {
        self.gauges = Some(gauges);
        self
    }

    /// Items waiting in `lane` now.
    pub fn waiting(&self, lane: Lane) -> usize {
        let rx = match lane {
            Lane::File => &self.file,
            Lane::Bulk => &self.bulk,
        };
        rx.as_ref().map_or(0, mpsc::Receiver::len)
    }

    /// The next item of either lane, the file lane first, for a consumer
    /// with nothing downstream (`reflex events`, tests).
    pub async fn next(&mut self) -> Option<T> {
        match self.recv::<()>(None).await? {
            Taken::File(item) | Taken::Bulk(item, _) => Some(item),
        }
    }

    /// An item waiting now, the file lane first, without waiting.
    pub fn try_next(&mut self) -> Option<T> {
        [&mut self.file, &mut self.bulk]
            .into_iter()
            .find_map(|rx| rx.as_mut()?.try_recv().ok())
    }

    /// The next item, the file lane first. A bulk item is taken only once
    /// `room` (the stage's bulk lane downstream, if any) has room for one
    /// more, which comes with it. `None` once both lanes are closed and
    /// empty. Cancel-safe: nothing taken is lost when the future is dropped.
    pub async fn recv<'a, U>(
        &mut self,
        room: Option<&'a mpsc::Sender<U>>,
    ) -> Option<Taken<'a, T, U>> {
        loop {
            if self.file.is_none() && self.bulk.is_none() {
                return None;
            }
            if self.run >= FILE_BURST {
                // The bulk lane's turn, if it has an item and room.
                self.run = 0;
                if let Some(bulk) = self.bulk.as_mut() {
                    let permit = match room {
                        Some(out) => out.try_reserve().ok().map(Some),
                        None => Some(None),
                    };
                    if let Some(permit) = permit
                        && let Ok(item) = bulk.try_recv()
                    {
                        self.show();
                        return Some(Taken::Bulk(item, permit));
                    }
                }
            }
            let (file, bulk) = (&mut self.file, &mut self.bulk);
            tokio::select! {
                biased;
                item = recv_or_pending(file), if file.is_some() => match item {
                    Some(item) => {
                        self.run += 1;
                        self.show();
                        return Some(Taken::File(item));
                    }
                    None => self.file = None,
                },
                (permit, item) = async {
                    // With nobody downstream the item is taken without a
                    // permit, so the stage sees the lane close and stops.
                    let permit = match room {
                        Some(out) => out.reserve().await.ok(),
                        None => None,
                    };
                    (permit, recv_or_pending(bulk).await)
                }, if bulk.is_some() => match item {
                    Some(item) => {
                        self.run = 0;
                        self.show();
                        return Some(Taken::Bulk(item, permit));
                    }
                    None => self.bulk = None,
                },
            }
        }
    }

    fn show(&self) {
        if let Some([file, bulk]) = &self.gauges {
            file.set(self.waiting(Lane::File) as i64);
            bulk.set(self.waiting(Lane::Bulk) as i64);
        }
    }
}

async fn recv_or_pending<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
