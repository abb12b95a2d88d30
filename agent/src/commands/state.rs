//! The state directory holds copies of managed files (a baseline of
//! `/etc/shadow` is as secret as the file), spooled alerts and the alert
//! log: at start it is made the agent's own, mode 0700, with every
//! directory in it 0700 and every file 0600, whoever created it; and the
//! agent creates what it adds there owner-only (umask 077).
use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// Why the state directory could not be made private.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A call on the directory or an entry failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The walk of the directory failed.
    #[error("walking {path}")]
    Walk {
        /// The directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: walkdir::Error,
    },
}

/// What [`secure`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Secured {
    /// Entries whose mode was narrowed.
    pub modes: usize,
    /// Entries that belonged to another user and were taken over.
    pub owners: usize,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_owned();
    move |source| StateError::Io { what, path, source }
}

/// Sets the process umask to 077 and returns the one it had.
pub fn private_umask() -> u32 {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077)).as_raw_mode()
}

/// Creates `dir` (0700) if needed and makes it and everything under it
/// private to the agent's user. Symlinks are left alone; the top directory
/// is fixed first, so no other user can swap an entry during the walk.
pub fn secure(dir: &Path) -> Result<Secured, StateError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating", dir))?;
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let mut done = Secured::default();
    let walk = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .same_file_system(true);
    for entry in walk {
        let entry = entry.map_err(|source| StateError::Walk {
            path: dir.to_owned(),
            source,
        })?;
        let kind = entry.file_type();
        let want = if kind.is_dir() {
            0o700
        } else if kind.is_file() {
            0o600
        } else {
            continue;
        };
        let path = entry.path();
        let meta = entry.metadata().map_err(|source| StateError::Walk {
            path: path.to_owned(),
            source,
        })?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(io("taking over", path))?;
            done.owners += 1;
        }
        if meta.mode() & 0o7777 != want {
            fs::set_permissions(path, fs::Permissions::from_mode(want))
                .map_err(io("narrowing the mode of", path))?;
            done.modes += 1;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_state_directory_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let objects = state.join("baselines/objects");
        fs::create_dir_all(&objects).unwrap();
        let shadow = objects.join("0123");
        fs::write(&shadow, "root:$6$secret\n").unwrap();
        for (path, mode) in [(&state, 0o755), (&objects, 0o775), (&shadow, 0o644)] {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::symlink("/etc/hostname", state.join("link")).unwrap();
        let done = secure(&state).unwrap();
        // state, baselines (made 0755 above), objects, the file.
        assert_eq!(done.modes, 4);
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&objects), 0o700);
        assert_eq!(mode(&shadow), 0o600);
        assert_eq!(
            secure(&state).unwrap(),
            Secured::default(),
            "nothing left to fix"
        );
    }
}
