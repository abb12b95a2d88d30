//! cgroups a test makes under the cgroup v2 root, named like systemd units
//! and container runtimes, and removed (processes killed first) on drop,
//! also when the test fails.
use std::{
    fs,
    os::fd::{AsRawFd as _, OwnedFd},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// Where the cgroup v2 hierarchy is mounted.
pub fn root() -> PathBuf {
    reflex::loader::cgroup::root().expect("a cgroup v2 hierarchy")
}

/// A tree of cgroups below the root; the top one and everything made under
/// it are removed on drop.
pub struct CgroupTree {
    top: PathBuf,
}

impl CgroupTree {
    /// Makes `/NAME` under the cgroup v2 root (`reflex-test-….slice`).
    pub fn new(name: &str) -> Self {
        let top = root().join(name);
        fs::create_dir(&top).unwrap_or_else(|e| panic!("mkdir {}: {e}", top.display()));
        Self { top }
    }

    /// Makes `REL` (slash-separated) under the top cgroup, parents included,
    /// and returns its path below the root (`/reflex-test-….slice/REL`).
    pub fn make(&self, rel: &str) -> String {
        let dir = self.top.join(rel);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let below = dir.strip_prefix(root()).expect("under the root");
        format!("/{}", below.display())
    }

    /// Has `command`'s process join the cgroup at `path` (below the root)
    /// between fork and exec, so its exec is already there.
    pub fn place(&self, command: &mut Command, path: &str) {
        let procs = root()
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs");
        let file: OwnedFd = fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .unwrap_or_else(|e| panic!("open {}: {e}", procs.display()))
            .into();
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls write(2), async-signal-safe, on a descriptor the
        // parent opened (and keeps open, moved into the closure).
        unsafe {
            command.pre_exec(move || {
                // "0" moves the writer itself.
                let n = libc::write(file.as_raw_fd(), b"0".as_ptr().cast(), 1);
                if n == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        // Deepest first: a cgroup with children or processes cannot go.
        let mut dirs: Vec<PathBuf> = walk(&self.top);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            kill_all(&dir);
            let gone = crate::eventually(Duration::from_secs(10), || match fs::remove_dir(&dir) {
                Ok(()) => true,
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            });
            if !gone {
                eprintln!("left behind: {}", dir.display());
            }
        }
    }
}

/// `dir` and every cgroup below it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&entry.path()));
        }
    }
    out
}

/// Kills what runs in `dir`: processes this test placed there.
fn kill_all(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for pid in fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
