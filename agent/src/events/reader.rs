//! Reading the event ring buffer from tokio without busy polling.
use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

/// Waits on the ring buffer's fd and hands out its records.
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

    /// Waits until records are available, without taking them: the next
    /// [`EventReader::read_batch`] returns at once.
    pub async fn ready(&mut self) -> io::Result<()> {
        self.fd.readable_mut().await.map(drop)
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

    /// Waits until records are available, then passes each one to `each`
    /// until the buffer is empty. Returns how many records were read.
    pub async fn read_batch(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<usize> {
        let mut guard = self.fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut count = 0;
        while let Some(item) = ring.next() {
            each(&item);
            count += 1;
        }
        guard.clear_ready();
        // A record submitted between the last read and `clear_ready` woke
        // nobody: drain once more so it is not left until the next wake-up.
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            each(&item);
            count += 1;
        }
        Ok(count)
    }
}
