//! An on-disk queue per remote sink: one file per alert, named by a
//! sequence number so delivery keeps their order, also across restarts.
//! Bounded in entries and in bytes (the alerts' own, not the filesystem's
//! blocks): past either, the oldest are dropped, and counted.
use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::Mutex,
};

/// A spool directory.
pub struct Spool {
    dir: PathBuf,
    max_entries: usize,
    max_bytes: u64,
    state: Mutex<State>,
}

struct State {
    next: u64,
    /// Sequence number → size in bytes.
    entries: BTreeMap<u64, u64>,
    bytes: u64,
}

/// What [`Spool::push`] had to drop to stay within its bounds.
pub struct Pushed {
    /// Oldest entries removed.
    pub dropped: usize,
    /// Entries now waiting.
    pub waiting: usize,
    /// Bytes now waiting.
    pub bytes: u64,
}

impl Spool {
    /// Opens (creating, owner-only) `dir`, picking up what an earlier run
    /// left there; past `max_entries` or `max_bytes` the oldest go.
    pub fn open(dir: &Path, max_entries: usize, max_bytes: u64) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut entries = BTreeMap::new();
        let mut bytes = 0;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse().ok())
            {
                let size = entry.metadata()?.len();
                bytes += size;
                entries.insert(seq, size);
            }
        }
        let next = entries.last_key_value().map_or(0, |(l, _)| l + 1);
        Ok(Self {
            dir: dir.to_owned(),
            max_entries: max_entries.max(1),
            max_bytes: max_bytes.max(1),
            state: Mutex::new(State {
                next,
                entries,
                bytes,
            }),
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    /// Appends `body` (written owner-only to a temporary name, then renamed
    /// into place), dropping the oldest past either bound.
    pub fn push(&self, body: &[u8]) -> io::Result<Pushed> {
        let mut state = self.state.lock().expect("spool lock");
        let seq = state.next;
        let path = self.path(seq);
        let temp = path.with_extension("tmp");
        write_private(&temp, body)?;
        fs::rename(&temp, &path)?;
        state.next += 1;
        state.entries.insert(seq, body.len() as u64);
        state.bytes += body.len() as u64;
        let mut dropped = 0;
        // The newest entry stays even alone past the byte bound: the line
        // bound keeps it far below.
        while state.entries.len() > self.max_entries
            || (state.bytes > self.max_bytes && state.entries.len() > 1)
        {
            let Some((oldest, size)) = state.entries.pop_first() else {
                break;
            };
            state.bytes -= size;
            let _ = fs::remove_file(self.path(oldest));
            dropped += 1;
        }
        Ok(Pushed {
            dropped,
            waiting: state.entries.len(),
            bytes: state.bytes,
        })
    }

    /// The oldest entry, if any: its sequence number and content.
    pub fn peek(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        let state = self.state.lock().expect("spool lock");
        let Some((&seq, _)) = state.entries.first_key_value() else {
            return Ok(None);
        };
        drop(state);
        match fs::read(self.path(seq)) {
            Ok(body) => Ok(Some((seq, body))),
            // Dropped meanwhile to make room: take the next one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.state.lock().expect("spool lock").forget(seq);
                self.peek()
            }
            Err(e) => Err(e),
        }
    }

    /// Removes a delivered entry; returns the entries and bytes left.
    pub fn remove(&self, seq: u64) -> io::Result<(usize, u64)> {
        let mut state = self.state.lock().expect("spool lock");
        state.forget(seq);
        match fs::remove_file(self.path(seq)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok((state.entries.len(), state.bytes)),
        }
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.state.lock().expect("spool lock").bytes
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.state.lock().expect("spool lock").entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn forget(&mut self, seq: u64) {
        if let Some(size) = self.entries.remove(&seq) {
            self.bytes -= size;
        }
    }
}

fn write_private(path: &Path, body: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_survives_reopen_and_drops_oldest_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 3, 1 << 20).unwrap();
        for i in 0..4 {
            let pushed = spool.push(format!("{i}").as_bytes()).unwrap();
            assert_eq!(pushed.dropped, usize::from(i == 3));
        }
        let reopened = Spool::open(dir.path(), 3, 1 << 20).unwrap();
        let mut seen = Vec::new();
        while let Some((seq, body)) = reopened.peek().unwrap() {
            seen.push(String::from_utf8(body).unwrap());
            reopened.remove(seq).unwrap();
        }
        assert_eq!(seen, ["1", "2", "3"]);
        reopened.push(b"4").unwrap();
        assert_eq!(reopened.peek().unwrap().unwrap().0, 4, "sequence continues");
    }

    #[test]
    fn drops_oldest_past_the_byte_bound() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1000, 250).unwrap();
        let mut dropped = 0;
        for i in 0..10u8 {
            let pushed = spool.push(&[b'a' + i; 100]).unwrap();
            dropped += pushed.dropped;
            assert!(pushed.bytes <= 250, "{}", pushed.bytes);
        }
        assert_eq!((dropped, spool.len(), spool.bytes()), (8, 2, 200));
        let on_disk: u64 = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(on_disk, 200);
        let reopened = Spool::open(dir.path(), 1000, 250).unwrap();
        assert_eq!(reopened.bytes(), 200);
        assert_eq!(reopened.peek().unwrap().unwrap().1, [b'i'; 100]);
    }
}
