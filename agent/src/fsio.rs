//! Filesystem primitives the settler and the revert action share: opening
//! under a directory without following symlinks, a file's state, hashing,
//! and restoring content atomically, extended attributes included
//! ([`xattr`]). A leaf: it imports no stage.
pub mod pool;
pub mod xattr;

use std::{
    fs::File,
    io::{self, Read as _},
    os::fd::OwnedFd,
    path::Path,
};

use reflex_wire::FileKey;
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, ResolveFlags, openat, openat2, statat};
use sha2::{Digest as _, Sha256};

/// Why a file could not be read, checked or restored.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// Someone else's file took the path between the restore's rename and
    /// its check.
    #[error("{0} was replaced by another file as it was restored")]
    Raced(String),
    /// Every temporary name tried beside the path was already taken.
    #[error("the temporary name for restoring {0} was taken")]
    TempTaken(String),
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
    /// An extended attribute could not be set or removed on a restore's new
    /// file.
    #[error("setting extended attribute {name} of {path}")]
    Xattr {
        /// The attribute.
        name: String,
        /// The path being restored.
        path: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// A restore's new file did not come out as recorded (the access ACL
    /// and the mode disagree, or the kernel changed an attribute).
    #[error("the restored {path} came out unlike its baseline: {detail}")]
    Unlike {
        /// The path being restored.
        path: String,
        /// What differs.
        detail: String,
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

/// What kind of file is at `path` when it is not a regular file (`fifo`,
/// `socket`, `directory`, `symlink`, `char_device`, `block_device`);
/// `None` for a regular file or nothing. Looked at with `lstat`, never
/// opened.
pub fn odd_kind(path: &Path) -> Option<&'static str> {
    let (dir, name) = open_parent(path).ok()?;
    let stat = statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => None,
        FileType::Fifo => Some("fifo"),
        FileType::Socket => Some("socket"),
        FileType::Directory => Some("directory"),
        FileType::Symlink => Some("symlink"),
        FileType::CharacterDevice => Some("char_device"),
        FileType::BlockDevice => Some("block_device"),
        FileType::Unknown => Some("unknown"),
    }
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
    // The type first: a FIFO, socket, device or directory at the path is
    // never opened (opening a FIFO for reading is a reader its writer
    // waits for; a device's open has effects of its own).
    let before =
        statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err("inspecting", path))?;
    if FileType::from_raw_mode(before.st_mode) != FileType::RegularFile {
        return Err(FsError::Refused {
            path: path.display().to_string(),
            why: "it is not a regular file",
        });
    }
    // Non-blocking: a FIFO swapped in between the look and the open must
    // not hang the agent in `open`; whatever was opened must be a regular
    // file.
    let fd = openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("opening", path))?;
    let stat = rustix::fs::fstat(&fd).map_err(io_err("inspecting", path))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(FsError::NotAFile(path.display().to_string()));
    }
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
/// `owner`'s mode and owner and, when `xattrs` names a digest, extended
/// attributes with that digest. Reads the content only when the rest
/// agrees.
pub fn has_state(
    path: &Path,
    sha256: &str,
    size: u64,
    owner: Ownership,
    xattrs: Option<&str>,
) -> Result<bool, FsError> {
    let Some(now) = state(path)? else {
        return Ok(false);
    };
    if (now.mode, now.uid, now.gid, now.size) != (owner.mode, owner.uid, owner.gid, size) {
        return Ok(false);
    }
    if let Some(want) = xattrs
        && xattr::digest(path)? != want
    {
        return Ok(false);
    }
    Ok(content_hash(path)? == sha256)
}

mod restore;

pub use restore::{
    Ownership, is_own_temp, remove_created, remove_stale_temps, restore, restore_with,
};
