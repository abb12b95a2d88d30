//! Filesystem primitives the settler and the revert action share: opening
//! under a directory without following symlinks, a file's state, hashing,
//! and restoring content atomically. A leaf: it imports no stage.
use std::{
    fs::File,
    io::{self, Read as _, Write as _},
    os::fd::OwnedFd,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use reflex_wire::FileKey;
use rustix::fs::{
    AtFlags, CWD, FileType, Mode, OFlags, ResolveFlags, fchmod, fchown, fstat, fsync, openat,
    openat2, renameat, statat, unlinkat,
};
use sha2::{Digest as _, Sha256};

/// Why a file could not be read, checked or restored.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The path has no parent or no file name.
    #[error("{0} is not a file path")]
    NotAFile(String),
    /// The file is not one this operation may touch.
    #[error("refusing {path}: {why}")]
    Refused {
        /// The path.
        path: String,
        /// Why.
        why: &'static str,
    },
    /// A filesystem call failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(rustix::io::Errno) -> FsError {
    let path = path.display().to_string();
    move |e| FsError::Io {
        what,
        path,
        source: e.into(),
    }
}

/// Opens the directory of `path` refusing symlinks at every step, and
/// returns it with the file name.
fn open_parent(path: &Path) -> Result<(OwnedFd, &std::ffi::OsStr), FsError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(FsError::NotAFile(path.display().to_string()));
    };
    let dir = openat2(
        CWD,
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(io_err("opening the directory of", path))?;
    Ok((dir, name))
}

/// What a file is now, for comparison with its baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    /// Identity.
    pub key: FileKey,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
}

/// The state of `path` (not following a final symlink); `None` when there
/// is no regular file there.
pub fn state(path: &Path) -> Result<Option<FileState>, FsError> {
    let (dir, name) = open_parent(path)?;
    let stat = match statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io_err("inspecting", path)(e)),
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Ok(None);
    }
    Ok(Some(FileState {
        key: FileKey {
            dev: encode_dev(stat.st_dev),
            _pad: 0,
            ino: stat.st_ino,
        },
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        size: stat.st_size as u64,
    }))
}

/// The kernel's internal `dev_t` (major << 20 | minor), as the probes see it.
pub fn encode_dev(dev: u64) -> u32 {
    let major = rustix::fs::major(dev);
    let minor = rustix::fs::minor(dev);
    (major << 20) | minor
}

/// Opens `path` for reading, refusing symlinks in the directories and as
/// the file itself.
fn open_nofollow(path: &Path) -> Result<File, FsError> {
    let (dir, name) = open_parent(path)?;
    let fd = openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("opening", path))?;
    Ok(File::from(fd))
}

/// SHA-256 of the content of `path`, read without following a final symlink.
pub fn content_hash(path: &Path) -> Result<String, FsError> {
    hash_reader(open_nofollow(path)?).map_err(|source| FsError::Io {
        what: "reading",
        path: path.display().to_string(),
        source,
    })
}

/// The content of `path`, read without following a final symlink, up to
/// `limit` bytes.
pub fn read_content(path: &Path, limit: u64) -> Result<Vec<u8>, FsError> {
    let mut content = Vec::new();
    open_nofollow(path)?
        .take(limit + 1)
        .read_to_end(&mut content)
        .map_err(|source| FsError::Io {
            what: "reading",
            path: path.display().to_string(),
            source,
        })?;
    if content.len() as u64 > limit {
        return Err(FsError::Io {
            what: "recording (larger than the baseline limit)",
            path: path.display().to_string(),
            source: io::Error::from(io::ErrorKind::FileTooLarge),
        });
    }
    Ok(content)
}

/// SHA-256 of everything `reader` yields, as lowercase hex.
pub fn hash_reader(mut reader: impl io::Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Whether `path` is a regular file with content `sha256`, `size` bytes,
/// and `owner`'s mode and owner. Reads the content only when the rest
/// agrees.
pub fn has_state(path: &Path, sha256: &str, size: u64, owner: Ownership) -> Result<bool, FsError> {
    let Some(now) = state(path)? else {
        return Ok(false);
    };
    if (now.mode, now.uid, now.gid, now.size) != (owner.mode, owner.uid, owner.gid, size) {
        return Ok(false);
    }
    Ok(content_hash(path)? == sha256)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary name a restore of `name` by this process uses.
fn temp_name(name: &std::ffi::OsStr) -> String {
    format!(
        ".{}.reflex-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether `entry` is a restore's temporary file for `name` left by another
/// process (an agent killed mid-revert): `.NAME.reflex-PID-N`.
fn is_stale_temp(entry: &str, name: &str) -> bool {
    let Some(rest) = entry
        .strip_prefix('.')
        .and_then(|e| e.strip_prefix(name))
        .and_then(|e| e.strip_prefix(".reflex-"))
    else {
        return false;
    };
    let Some((pid, n)) = rest.split_once('-') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(pid) && digits(n) && pid != std::process::id().to_string()
}

/// Whether `entry` is a temporary file a restore by this very process is
/// writing (`.NAME.reflex-PID-N` with this process's pid): never judged,
/// recorded or removed as a file of its own.
pub fn is_own_temp(entry: &str) -> bool {
    let Some(rest) = entry.strip_prefix('.') else {
        return false;
    };
    let marker = format!(".reflex-{}-", std::process::id());
    rest.rsplit_once(&marker).is_some_and(|(name, n)| {
        !name.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Removes the regular file at `path` (a file created where only known
/// files may be), and only it: the directory is opened refusing symlinks at
/// every step, the name is unlinked within that directory (a symlink put
/// there in the meantime is removed itself, never followed), a directory
/// or anything but a regular file is refused, and so is a file that is no
/// longer `expected` (replaced since it was judged) or one of this
/// process's own restore temporaries. Returns the identity removed.
pub fn remove_created(path: &Path, expected: Option<FileKey>) -> Result<FileKey, FsError> {
    let (dir, name) = open_parent(path)?;
    if is_own_temp(&name.to_string_lossy()) {
        return Err(FsError::Refused {
            path: path.display().to_string(),
            why: "it is the agent's own temporary file",
        });
    }
    let stat = statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err("inspecting", path))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(FsError::Refused {
            path: path.display().to_string(),
            why: "it is not a regular file",
        });
    }
    let key = FileKey {
        dev: encode_dev(stat.st_dev),
        _pad: 0,
        ino: stat.st_ino,
    };
    if expected.is_some_and(|e| e != key) {
        return Err(FsError::Refused {
            path: path.display().to_string(),
            why: "another file took its place since it was judged",
        });
    }
    // Without AT_REMOVEDIR: a directory swapped in after the check fails
    // with EISDIR instead of going.
    unlinkat(&dir, name, AtFlags::empty()).map_err(io_err("removing", path))?;
    fsync(&dir).map_err(io_err("syncing the directory of", path))?;
    Ok(key)
}

/// Removes the temporary files a killed agent left beside `path` while
/// restoring it; the target itself was never half-written (restores rename
/// a complete file over it). Returns how many were removed.
pub fn remove_stale_temps(path: &Path) -> Result<usize, FsError> {
    let (dir, name) = open_parent(path)?;
    let name = name.to_string_lossy();
    let entries =
        rustix::fs::Dir::read_from(&dir).map_err(io_err("listing the directory of", path))?;
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_err("listing the directory of", path))?;
        let Ok(entry) = entry.file_name().to_str() else {
            continue;
        };
        if is_stale_temp(entry, &name) {
            unlinkat(&dir, entry, AtFlags::empty())
                .map_err(io_err("removing a stale temporary file beside", path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Mode and owner a restored file gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Replaces `path` by the content of the file `content` with `owner`'s mode
/// and owner: a temporary file in the same directory, fsync, rename over,
/// fsync of the directory. Returns the identity of the restored file (a new
/// inode).
pub fn restore(path: &Path, content: &Path, owner: Ownership) -> Result<FileKey, FsError> {
    restore_with(path, content, owner, |_, _| {})
}

/// [`restore`], calling `before_rename` with the identity and temporary
/// path of the complete new file just before it is renamed over `path` (so
/// a watcher can follow it before anyone can open it there).
pub fn restore_with(
    path: &Path,
    content: &Path,
    owner: Ownership,
    before_rename: impl FnOnce(FileKey, &Path),
) -> Result<FileKey, FsError> {
    let (dir, name) = open_parent(path)?;
    let temp = temp_name(name);
    let fd = openat(
        &dir,
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(io_err("creating a temporary file beside", path))?;
    let result = (|| {
        let mut out = File::from(fd);
        let mut source = File::open(content).map_err(|source| FsError::Io {
            what: "opening the content to restore for",
            path: path.display().to_string(),
            source,
        })?;
        let mut buf = Vec::new();
        source
            .read_to_end(&mut buf)
            .and_then(|_| out.write_all(&buf))
            .map_err(|source| FsError::Io {
                what: "writing the restored content of",
                path: path.display().to_string(),
                source,
            })?;
        fchown(
            &out,
            Some(rustix::fs::Uid::from_raw(owner.uid)),
            Some(rustix::fs::Gid::from_raw(owner.gid)),
        )
        .map_err(io_err("setting the owner of", path))?;
        fchmod(&out, Mode::from_raw_mode(owner.mode))
            .map_err(io_err("setting the mode of", path))?;
        fsync(&out).map_err(io_err("syncing", path))?;
        let stat = fstat(&out).map_err(io_err("inspecting", path))?;
        before_rename(
            FileKey {
                dev: encode_dev(stat.st_dev),
                _pad: 0,
                ino: stat.st_ino,
            },
            &path.with_file_name(temp.as_str()),
        );
        renameat(&dir, temp.as_str(), &dir, name)
            .map_err(io_err("renaming the restored file onto", path))?;
        fsync(&dir).map_err(io_err("syncing the directory of", path))?;
        Ok(FileKey {
            dev: encode_dev(stat.st_dev),
            _pad: 0,
            ino: stat.st_ino,
        })
    })();
    if result.is_err() {
        let _ = unlinkat(&dir, temp.as_str(), AtFlags::empty());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temps_are_another_process_restore_of_the_same_file() {
        let me = std::process::id();
        assert!(is_stale_temp(".hosts.reflex-4242-7", "hosts"));
        assert!(!is_stale_temp(&format!(".hosts.reflex-{me}-7"), "hosts"));
        assert!(!is_stale_temp(".hosts.reflex-4242-", "hosts"));
        assert!(!is_stale_temp(".hosts.reflex-42x-1", "hosts"));
        assert!(!is_stale_temp(".other.reflex-4242-1", "hosts"));
        assert!(!is_stale_temp("hosts", "hosts"));
    }

    #[test]
    fn own_temps_are_this_process_restores() {
        let me = std::process::id();
        assert!(is_own_temp(&format!(".app.conf.reflex-{me}-3")));
        assert!(!is_own_temp(".app.conf.reflex-4242-3"));
        assert!(!is_own_temp(&format!("app.conf.reflex-{me}-3")));
        assert!(!is_own_temp(&format!(".app.conf.reflex-{me}-")));
        assert!(!is_own_temp(&format!(".app.conf.reflex-{me}-x")));
    }

    #[test]
    fn removal_takes_the_regular_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, "keep").unwrap();

        let planted = dir.path().join("evil.conf");
        std::fs::write(&planted, "evil").unwrap();
        let key = state(&planted).unwrap().unwrap().key;
        let other = FileKey {
            ino: key.ino + 1,
            ..key
        };
        assert!(
            matches!(
                remove_created(&planted, Some(other)),
                Err(FsError::Refused { .. })
            ),
            "not the file that was judged"
        );
        assert_eq!(remove_created(&planted, Some(key)).unwrap(), key);
        assert!(!planted.exists());

        // A symlink is refused (never followed to its target).
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            remove_created(&link, None),
            Err(FsError::Refused { .. })
        ));
        // So is a directory, and a path through a symlinked directory.
        let sub = dir.path().join("sub.conf");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(
            remove_created(&sub, None),
            Err(FsError::Refused { .. })
        ));
        let via = dir.path().join("via");
        std::os::unix::fs::symlink(outside.path(), &via).unwrap();
        assert!(remove_created(&via.join("precious"), None).is_err());
        // And this process's own restore temporaries.
        let temp = dir
            .path()
            .join(format!(".app.conf.reflex-{}-0", std::process::id()));
        std::fs::write(&temp, "half").unwrap();
        assert!(matches!(
            remove_created(&temp, None),
            Err(FsError::Refused { .. })
        ));

        assert!(temp.exists() && sub.is_dir() && link.exists());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn removes_only_stale_temps_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app.conf");
        std::fs::write(&target, "good").unwrap();
        std::fs::write(dir.path().join(".app.conf.reflex-4242-0"), "half").unwrap();
        std::fs::write(dir.path().join(".app.conf.bak"), "keep").unwrap();
        assert_eq!(remove_stale_temps(&target).unwrap(), 1);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".app.conf.bak", "app.conf"]);
    }
}
