//! An on-disk queue per remote sink: one file per alert, named by a
//! sequence number so delivery keeps their order, also across restarts.
//! When the bound is reached the oldest are dropped, and counted.
use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// A spool directory.
pub struct Spool {
    dir: PathBuf,
    max_entries: usize,
    state: Mutex<State>,
}

struct State {
    next: u64,
    entries: std::collections::BTreeSet<u64>,
}

/// What [`Spool::push`] had to drop to stay within its bound.
pub struct Pushed {
    /// Oldest entries removed.
    pub dropped: usize,
    /// Entries now waiting.
    pub waiting: usize,
}

impl Spool {
    /// Opens (creating) `dir`, picking up what an earlier run left there.
    pub fn open(dir: &Path, max_entries: usize) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut entries = std::collections::BTreeSet::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            if let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse().ok())
            {
                entries.insert(seq);
            }
        }
        let next = entries.last().map_or(0, |l| l + 1);
        Ok(Self {
            dir: dir.to_owned(),
            max_entries: max_entries.max(1),
            state: Mutex::new(State { next, entries }),
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    /// Appends `body` (written to a temporary name, then renamed into place).
    pub fn push(&self, body: &[u8]) -> io::Result<Pushed> {
        let mut state = self.state.lock().expect("spool lock");
        let seq = state.next;
        let path = self.path(seq);
        let temp = path.with_extension("tmp");
        fs::write(&temp, body)?;
        fs::rename(&temp, &path)?;
        state.next += 1;
        state.entries.insert(seq);
        let mut dropped = 0;
        while state.entries.len() > self.max_entries {
            if let Some(oldest) = state.entries.pop_first() {
                let _ = fs::remove_file(self.path(oldest));
                dropped += 1;
            }
        }
        Ok(Pushed {
            dropped,
            waiting: state.entries.len(),
        })
    }

    /// The oldest entry, if any: its sequence number and content.
    pub fn peek(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        let state = self.state.lock().expect("spool lock");
        let Some(&seq) = state.entries.first() else {
            return Ok(None);
        };
        drop(state);
        match fs::read(self.path(seq)) {
            Ok(body) => Ok(Some((seq, body))),
            // Dropped meanwhile to make room: take the next one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.state.lock().expect("spool lock").entries.remove(&seq);
                self.peek()
            }
            Err(e) => Err(e),
        }
    }

    /// Removes a delivered entry.
    pub fn remove(&self, seq: u64) -> io::Result<usize> {
        let mut state = self.state.lock().expect("spool lock");
        state.entries.remove(&seq);
        match fs::remove_file(self.path(seq)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(state.entries.len()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_survives_reopen_and_drops_oldest_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 3).unwrap();
        for i in 0..4 {
            let pushed = spool.push(format!("{i}").as_bytes()).unwrap();
            assert_eq!(pushed.dropped, usize::from(i == 3));
        }
        let reopened = Spool::open(dir.path(), 3).unwrap();
        let mut seen = Vec::new();
        while let Some((seq, body)) = reopened.peek().unwrap() {
            seen.push(String::from_utf8(body).unwrap());
            reopened.remove(seq).unwrap();
        }
        assert_eq!(seen, ["1", "2", "3"]);
        reopened.push(b"4").unwrap();
        assert_eq!(reopened.peek().unwrap().unwrap().0, 4, "sequence continues");
    }
}
