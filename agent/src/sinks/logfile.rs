//! `alerts.jsonl`: appended whole lines, rotated by size
//! (`alerts.jsonl.1` is the newest old file, `.N` the oldest kept), and
//! reopened on request (SIGHUP) for an external logrotate. Old files are
//! not compressed: they stay readable by `tail`, `jq` and log shippers as
//! they are, and rotation costs the actions stage a rename, not a pass
//! over 64 MiB.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// Size bound of `alerts.jsonl` by default.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// Rotated files kept by default, besides the live one.
pub const DEFAULT_KEEP: usize = 5;

/// An append-only file rotated at a size bound.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: Option<File>,
}

/// What [`RotatingFile::append`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// The live file was rotated first.
    pub rotated: bool,
    /// Size of the live file afterwards.
    pub size: u64,
}

impl RotatingFile {
    /// Opens (creating, owner-only) `path`, to be rotated past `max_bytes`
    /// keeping `keep` old files. When it cannot be opened now, the error is
    /// returned beside it and each append tries again.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> (Self, io::Result<()>) {
        let mut this = Self {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1),
            keep,
            file: None,
        };
        let opened = this.reopen();
        (this, opened)
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the live file again: after logrotate moved it away, the next
    /// line goes to a new file at the same path.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        self.file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)?,
        );
        Ok(())
    }

    /// Appends one whole line, rotating first when it would pass the bound.
    /// A write cut short (no space left) is cut back off, so the next line
    /// starts on a line of its own.
    pub fn append(&mut self, line: &[u8]) -> io::Result<Appended> {
        if self.file.is_none() {
            self.reopen()?;
        }
        let mut size = self.current()?.metadata()?.len();
        let mut rotated = false;
        if size > 0 && size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
            rotated = true;
            size = 0;
        }
        let file = self.current()?;
        file.write_all(line).inspect_err(|_| {
            let _ = file.set_len(size);
        })?;
        Ok(Appended {
            rotated,
            size: size + line.len() as u64,
        })
    }

    fn current(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the alert log is not open"))
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// `.N-1` → `.N` … live → `.1` (a rename over `.N` drops the oldest),
    /// then a new live file.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            remove_if_present(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                match fs::rename(self.numbered(n), self.numbered(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, self.numbered(1))?;
        }
        // A bound lowered since the last run leaves older files behind.
        let mut n = self.keep + 1;
        while self.numbered(n).exists() && n <= self.keep + 64 {
            remove_if_present(&self.numbered(n))?;
            n += 1;
        }
        self.reopen()
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn rotates_past_the_bound_and_keeps_n_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let (mut log, opened) = RotatingFile::open(&path, 1000, 2);
        opened.unwrap();
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let mut rotations = 0;
        for _ in 0..55 {
            rotations += usize::from(log.append(&line).unwrap().rotated);
        }
        assert_eq!(rotations, 5);
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"]);
        for name in &names {
            let meta = fs::metadata(dir.path().join(name)).unwrap();
            assert!(
                meta.len() <= 1000 && meta.len().is_multiple_of(100),
                "{name}"
            );
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn reopen_follows_an_external_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let (mut log, opened) = RotatingFile::open(&path, 1 << 20, 5);
        opened.unwrap();
        log.append(b"one\n").unwrap();
        fs::rename(&path, dir.path().join("moved")).unwrap();
        log.reopen().unwrap();
        log.append(b"two\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two\n");
        assert_eq!(fs::read(dir.path().join("moved")).unwrap(), b"one\n");
    }
}
