//! Reading the per-family ring buffers from tokio without busy polling.
use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use prometheus::IntCounter;
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::{Interval, MissedTickBehavior},
};

use crate::{events::Event, loader::EventRings};

/// Waits on one ring buffer's fd and hands out its records.
pub struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    /// Registers the ring buffer with the tokio reactor.
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd, which stays open and
        // unchanged for as long as the `RingBuf` lives inside the `AsyncFd`.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
        Ok(Self { fd })
    }

    /// Waits until records are available and forgets the wake-up: the
    /// caller drains next. Clearing before draining loses nothing, because
    /// the kernel wakes the reader for any record committed once the
    /// reader has caught up with it.
    pub async fn ready(&mut self) -> io::Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Passes the records available now to `each`, at most `limit` of
    /// them, without waiting; true when it stopped at the limit (more may
    /// be there).
    pub fn drain(&mut self, limit: usize, mut each: impl FnMut(&[u8])) -> bool {
        let ring = self.fd.get_mut();
        for _ in 0..limit {
            let Some(item) = ring.next() else {
                return false;
            };
            each(&item);
        }
        true
    }
}

/// The readers of every family's ring buffer.
///
/// On each wake-up all three are drained: exec, file, connect, then exec
/// once more, so that the exec of a process whose file or connect record
/// was read is read too (it was committed before that record was). The
/// records are then merged by kernel time, each family's in its own order,
/// so that a file or connect record finds its process's exec in the
/// process table. Across families, records of the same instant keep the
/// drain order.
///
/// The exec family's exit and fork records do not wake the reader (the
/// probes submit them quietly until an eighth of the ring buffer waits):
/// they are read on every wake-up, exec records' included, and at least
/// every `exec_flush`.
///
/// A drain takes at most [`DRAIN_MAX`] records of a family: a producer as
/// fast as the reader would otherwise keep one drain going, and the batch
/// growing, for as long as the flood lasts. What is left is read on the
/// next round, after the batch went into the bounded queue.
pub struct FamilyReaders {
    exec: EventReader,
    file: EventReader,
    connect: EventReader,
    /// The last drain stopped at its limit: read again without waiting.
    backlog: bool,
    /// Reads the exec family's quiet records.
    flush: Interval,
    /// The wake-up was the flush timer's.
    flushing: bool,
    /// Flush-timer drains that found exec records.
    flushes: IntCounter,
}

/// How often the agent reads the exec family's ring buffer unasked
/// (`ring_buffers.exec_flush`): its exit and fork probes do not wake the
/// agent, which cost more than the probes' own work.
pub const DEFAULT_EXEC_FLUSH: Duration = Duration::from_millis(10);

/// Records read from one family's ring buffer in one drain.
pub const DRAIN_MAX: usize = 1024;

impl FamilyReaders {
    /// Registers every ring buffer with the tokio reactor; the exec family
    /// is read at least every `exec_flush`, and each such read that found
    /// records counts in `flushes`.
    pub fn new(rings: EventRings, exec_flush: Duration, flushes: IntCounter) -> io::Result<Self> {
        let mut flush = tokio::time::interval(exec_flush);
        flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            exec: EventReader::new(rings.exec)?,
            file: EventReader::new(rings.file)?,
            connect: EventReader::new(rings.connect)?,
            backlog: false,
            flush,
            flushing: false,
            flushes,
        })
    }

    /// Waits until any buffer has records; [`FamilyReaders::drain`] next.
    pub async fn ready(&mut self) -> io::Result<()> {
        self.flushing = false;
        if self.backlog {
            return Ok(());
        }
        tokio::select! {
            biased;
            ready = self.exec.ready() => ready,
            ready = self.file.ready() => ready,
            ready = self.connect.ready() => ready,
            _ = self.flush.tick() => {
                self.flushing = true;
                Ok(())
            }
        }
    }

    /// Every record available now, decoded by `decode` (which drops what
    /// it returns `None` for), in the order described above.
    pub fn drain(&mut self, mut decode: impl FnMut(&[u8]) -> Option<Event>) -> Vec<Event> {
        let mut exec = Vec::new();
        let mut file = Vec::new();
        let mut connect = Vec::new();
        let mut backlog = self.exec.drain(DRAIN_MAX, |b| exec.extend(decode(b)));
        backlog |= self.file.drain(DRAIN_MAX, |b| file.extend(decode(b)));
        backlog |= self.connect.drain(DRAIN_MAX, |b| connect.extend(decode(b)));
        backlog |= self.exec.drain(DRAIN_MAX, |b| exec.extend(decode(b)));
        self.backlog = backlog;
        if self.flushing && !exec.is_empty() {
            self.flushes.inc();
        }
        merge_by_time([exec, file, connect])
    }
}

/// One sequence of `families`, each kept in its order, taking at each step
/// the head with the earliest kernel time (the first family on a tie).
fn merge_by_time<const N: usize>(families: [Vec<Event>; N]) -> Vec<Event> {
    let total = families.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    let mut heads: Vec<std::iter::Peekable<std::vec::IntoIter<Event>>> = families
        .into_iter()
        .map(|f| f.into_iter().peekable())
        .collect();
    loop {
        let next = heads
            .iter_mut()
            .enumerate()
            .filter_map(|(i, h)| h.peek().map(|e| (e.ktime_ns, i)))
            .min();
        let Some((_, i)) = next else { break };
        out.extend(heads[i].next());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Body, Exit, Task};

    fn at(ktime_ns: u64, pid: u32) -> Event {
        Event {
            ktime_ns,
            task: Task {
                tid: pid,
                pid,
                ppid: 0,
                uid: 0,
                gid: 0,
                comm: String::new(),
                cgroup_id: 0,
            },
            body: Body::Exit(Exit::from_raw(0)),
        }
    }

    #[test]
    fn merging_keeps_each_family_in_order_and_interleaves_by_time() {
        let exec = vec![at(10, 1), at(30, 2), at(5, 3)];
        let file = vec![at(20, 4), at(31, 5)];
        let connect = vec![at(10, 6)];
        let pids: Vec<u32> = merge_by_time([exec, file, connect])
            .iter()
            .map(|e| e.task.pid)
            .collect();
        // Exec's out-of-time record (5) stays after its predecessors.
        assert_eq!(pids, [1, 6, 4, 2, 3, 5]);
    }
}
