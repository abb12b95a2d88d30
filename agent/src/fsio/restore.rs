//! Restoring a file atomically beside its path, and the temporary files
//! that takes: a random name, a rename, a check of what the path holds.
use std::{
    fs::File,
    io::{Read as _, Write as _},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use reflex_wire::FileKey;
use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, fchmod, fchown, fstat, fsync, openat, renameat, statat,
    unlinkat,
};

use super::{FsError, encode_dev, io_err, open_parent, xattr};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name for a restore of `name` by this process, with a random
/// part: a user who may write the directory cannot guess it ahead to make
/// it exist (the create would fail) or to stand ready to swap it.
fn temp_name(name: &std::ffi::OsStr) -> String {
    let mut random = [0u8; 8];
    let n = match rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_ne_bytes(random),
        // No entropy (never on the kernels reflex runs on): still unique.
        _ => TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
    };
    format!(
        ".{}.reflex-{}-{n}",
        name.to_string_lossy(),
        std::process::id(),
    )
}

/// Tries a restore takes when someone replaces its file between the rename
/// and the check, or holds its temporary name.
const RESTORE_TRIES: usize = 4;

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
/// and owner and, when given, exactly the extended attributes `xattrs`
/// (`None`: whatever a new file gets): a temporary file in the same
/// directory, renamed over, then synced with its directory. Returns the
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
    before_rename: impl FnMut(FileKey, &Path),
) -> Result<FileKey, FsError> {
    let mut before_rename = before_rename;
    let mut last = None;
    for _ in 0..RESTORE_TRIES {
        match restore_once(path, content, owner, xattrs, &mut before_rename) {
            Err(e @ (FsError::Raced(_) | FsError::TempTaken(_))) => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| FsError::Raced(path.display().to_string())))
}

fn restore_once(
    path: &Path,
    content: &Path,
    owner: Ownership,
    xattrs: Option<&xattr::Xattrs>,
    before_rename: &mut impl FnMut(FileKey, &Path),
) -> Result<FileKey, FsError> {
    let (dir, name) = open_parent(path)?;
    let temp = temp_name(name);
    let fd = match openat(
        &dir,
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Err(rustix::io::Errno::EXIST) => {
            return Err(FsError::TempTaken(path.display().to_string()));
        }
        other => other.map_err(io_err("creating a temporary file beside", path))?,
    };
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
        let stat = fstat(&out).map_err(io_err("inspecting", path))?;
        let key = FileKey {
            dev: encode_dev(stat.st_dev),
            _pad: 0,
            ino: stat.st_ino,
        };
        before_rename(key, &path.with_file_name(temp.as_str()));
        renameat(&dir, temp.as_str(), &dir, name)
            .map_err(io_err("renaming the restored file onto", path))?;
        // The rename goes by name: in a directory others may write, the
        // name may have been given another file in between. What is at the
        // path now must be the file written here.
        let there = statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("inspecting the restored", path))?;
        if (there.st_dev, there.st_ino) != (stat.st_dev, stat.st_ino) {
            return Err(FsError::Raced(path.display().to_string()));
        }
        // Durable after it is in place, not before: readers see the whole
        // new content from the rename on either way, and a crash before
        // these syncs leaves a file the next start finds drifted from its
        // baseline and restores again. Syncing first cost every revert a
        // disk flush before the content was back.
        fsync(&out).map_err(io_err("syncing", path))?;
        fsync(&dir).map_err(io_err("syncing the directory of", path))?;
        Ok(key)
    })();
    if result.is_err() {
        // Only a temporary name that still holds this restore's file.
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
    use crate::fsio::state;

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

    #[test]
    fn a_restore_gives_the_new_file_exactly_the_recorded_attributes() {
        use crate::fsio::{content_hash, has_state};
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
        let hash = content_hash(&content).unwrap();
        assert!(has_state(&target, &hash, 4, owner, Some(&want.digest())).unwrap());
        assert!(!has_state(&target, &hash, 4, owner, Some("00")).unwrap());

        restore(&target, &content, owner, None).unwrap();
        assert_eq!(
            xattr::digest(&target).unwrap(),
            xattr::Xattrs::default().digest(),
            "without recorded attributes a new file has its own (none here)"
        );
    }
}
