//! Records into their lanes (see [`crate::lanes`]) without letting a full
//! bulk lane stop the file lane.
//!
//! A file record is sent at once; when the file lane is full the sensor
//! waits, and the ring buffers hold (and count) the rest, as before. Bulk
//! records go through a short read-ahead: when the bulk lane is full they
//! wait here while the sensor goes on reading, so that a file record read
//! after a connect flood is not stuck behind it. Reading pauses while
//! [`DRAIN_MAX`] or more bulk records are held, so one drain of every
//! family on top holds at most 4 × [`DRAIN_MAX`].
use std::collections::{HashSet, VecDeque};

use prometheus::IntGaugeVec;
use tokio::sync::mpsc;

use crate::{
    events::{Kind, Record, reader::DRAIN_MAX},
    lanes::{Lane, LaneSenders},
};

/// Processes remembered as writers of a watched file (whose exits the
/// file lane hears of); past it the set starts again (writers whose exit
/// was lost), and an exit not heard of only leaves a held change to settle
/// at its hold time.
const WRITERS_MAX: usize = 65_536;

/// The settler is gone: the sensor stops.
#[derive(Debug)]
pub(super) struct Closed;

/// The sensor's sending side of both lanes.
pub(super) struct Router {
    lanes: LaneSenders<Record>,
    held: VecDeque<Record>,
    writers: HashSet<u32>,
    gauge: IntGaugeVec,
}

impl Router {
    pub(super) fn new(lanes: LaneSenders<Record>, gauge: IntGaugeVec) -> Self {
        Self {
            lanes,
            held: VecDeque::new(),
            writers: HashSet::new(),
            gauge,
        }
    }

    /// Whether the sensor may read more records now.
    pub(super) fn open(&self) -> bool {
        self.held.len() < DRAIN_MAX
    }

    /// Whether bulk records wait for room.
    pub(super) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Passes `record` on in its lane: a file record now (waiting for
    /// room), a bulk record as soon as there is room. The exit of a
    /// process that wrote a watched file is also told to the file lane.
    pub(super) async fn route(&mut self, record: Record) -> Result<(), Closed> {
        match Lane::of(&record) {
            Lane::File => {
                if record.process.pid != 0 {
                    if self.writers.len() >= WRITERS_MAX {
                        self.writers.clear();
                    }
                    self.writers.insert(record.process.pid);
                }
                self.lanes.file.send(record).await.map_err(|_| Closed)?;
            }
            Lane::Bulk => {
                if record.kind == Kind::Exit && self.writers.remove(&record.process.pid) {
                    self.lanes
                        .file
                        .send(record.clone())
                        .await
                        .map_err(|_| Closed)?;
                }
                self.held.push_back(record);
            }
        }
        Ok(())
    }

    /// Moves held bulk records into the bulk lane while it has room,
    /// without waiting.
    pub(super) fn flush(&mut self) -> Result<(), Closed> {
        while let Some(record) = self.held.pop_front() {
            match self.lanes.bulk.try_send(record) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(record)) => {
                    self.held.push_front(record);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Closed),
            }
        }
        self.show();
        Ok(())
    }

    /// Waits for room in the bulk lane, then moves held records into it.
    pub(super) async fn send_held(&mut self) -> Result<(), Closed> {
        {
            let permit = self.lanes.bulk.reserve().await.map_err(|_| Closed)?;
            if let Some(record) = self.held.pop_front() {
                permit.send(record);
            }
        }
        self.flush()
    }

    /// Shows what waits in each lane (held bulk records included).
    pub(super) fn show(&self) {
        for lane in Lane::ALL {
            let tx = self.lanes.lane(lane);
            let mut waiting = tx.max_capacity() - tx.capacity();
            if lane == Lane::Bulk {
                waiting += self.held.len();
            }
            self.gauge
                .with_label_values(&[lane.label()])
                .set(waiting as i64);
        }
    }
}
