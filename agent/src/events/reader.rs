//! Reading the per-family ring buffers from tokio without busy polling.
use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use crate::loader::EventRings;

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

    /// Passes every record available now to `each`, without waiting.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        let ring = self.fd.get_mut();
        let mut count = 0;
        while let Some(item) = ring.next() {
            each(&item);
            count += 1;
        }
        count
    }
}

/// The readers of every family's ring buffer.
///
/// On each wake-up all three are drained, the exec family first, so that
/// a file or connect record finds the exec of its process in the process
/// table. Records of one family keep their order; across families the
/// order is this drain order, not the kernel's time order (an exec
/// committed while the later buffers are drained is read on the next
/// wake-up, and a record of its process read before it takes its context
/// from `/proc`).
pub struct FamilyReaders {
    exec: EventReader,
    file: EventReader,
    connect: EventReader,
}

impl FamilyReaders {
    /// Registers every ring buffer with the tokio reactor.
    pub fn new(rings: EventRings) -> io::Result<Self> {
        Ok(Self {
            exec: EventReader::new(rings.exec)?,
            file: EventReader::new(rings.file)?,
            connect: EventReader::new(rings.connect)?,
        })
    }

    /// Waits until any buffer has records; [`FamilyReaders::drain`] next.
    pub async fn ready(&mut self) -> io::Result<()> {
        tokio::select! {
            biased;
            ready = self.exec.ready() => ready,
            ready = self.file.ready() => ready,
            ready = self.connect.ready() => ready,
        }
    }

    /// Passes every record available now to `each`, exec family first,
    /// then file, then connect. Returns how many were read.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        self.exec.drain(&mut each) + self.file.drain(&mut each) + self.connect.drain(&mut each)
    }
}
