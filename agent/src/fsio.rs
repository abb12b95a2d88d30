//! Filesystem primitives the settler and the revert action share: opening
//! under a directory without following symlinks, a file's state, hashing,
//! and restoring content atomically, extended attributes included
//! ([`xattr`]). A leaf: it imports no stage.
pub mod xattr;

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
/// and owner and, when given, exactly the extended attributes `xattrs`
/// (`None`: whatever a new file gets): a temporary file in the same
/// directory, fsync, rename over, fsync of the directory. Returns the
/// identity of the restored file (a new inode).
pub fn restore(
    path: &Path,
    content: &Path,
    owner: Ownership,
    xattrs: Option<&xattr::Xattrs>,
) -> Result<FileKey, FsError> {
    restore_with(path, content, owner, xattrs, |_, _| {})
}

/// [`restore`], calling `before_rename` with the identity and temporary
/// path of the complete new file just before it is renamed over `path` (so
/// a watcher can follow it before anyone can open it there).
pub fn restore_with(
    path: &Path,
    content: &Path,
    owner: Ownership,
    xattrs: Option<&xattr::Xattrs>,
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
        // After the owner (a chown clears `security.capability`) and the
        // mode (the access ACL rewrites the group bits): the attributes,
        // then a check that mode and attributes are as recorded.
        if let Some(want) = xattrs {
            set_xattrs(&out, want, owner.mode, path)?;
        }
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

/// Gives the new file `out` exactly `want`'s attributes and checks that its
/// mode is still `mode` and its attributes read back as `want`.
fn set_xattrs(out: &File, want: &xattr::Xattrs, mode: u32, path: &Path) -> Result<(), FsError> {
    xattr::apply(out, want).map_err(|(name, source)| FsError::Xattr {
        name,
        path: path.display().to_string(),
        source,
    })?;
    let now = fstat(out).map_err(io_err("inspecting", path))?.st_mode & 0o7777;
    if now != mode {
        return Err(FsError::Unlike {
            path: path.display().to_string(),
            detail: format!("mode {now:o} after the attributes were set, not {mode:o}"),
        });
    }
    let digest = xattr::digest_fd(out).map_err(|source| FsError::Io {
        what: "reading back the extended attributes of",
        path: path.display().to_string(),
        source,
    })?;
    if digest != want.digest() {
        return Err(FsError::Unlike {
            path: path.display().to_string(),
            detail: "its extended attributes read back differently".into(),
        });
    }
    Ok(())
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

    #[test]
    fn a_restore_gives_the_new_file_exactly_the_recorded_attributes() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app.conf");
        let content = dir.path().join("object");
        std::fs::write(&target, "evil").unwrap();
        std::fs::write(&content, "good").unwrap();
        let held = File::open(&target).unwrap();
        if rustix::fs::fsetxattr(&held, "user.evil", b"1", rustix::fs::XattrFlags::empty()).is_err()
        {
            eprintln!("no user.* attributes on this filesystem; skipped");
            return;
        }
        let me = fstat(&held).unwrap();
        let owner = Ownership {
            mode: 0o640,
            uid: me.st_uid,
            gid: me.st_gid,
        };
        let want = xattr::Xattrs::from_pairs([("user.reflex", "deployed")]);
        restore(&target, &content, owner, Some(&want)).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"good");
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        assert_eq!(xattr::digest(&target).unwrap(), want.digest());
        assert!(
            has_state(
                &target,
                &content_hash(&content).unwrap(),
                4,
                owner,
                Some(&want.digest())
            )
            .unwrap()
        );
        assert!(
            !has_state(
                &target,
                &content_hash(&content).unwrap(),
                4,
                owner,
                Some("00")
            )
            .unwrap()
        );

        restore(&target, &content, owner, None).unwrap();
        assert_eq!(
            xattr::digest(&target).unwrap(),
            xattr::Xattrs::default().digest(),
            "without recorded attributes a new file has its own (none here)"
        );
    }
}
