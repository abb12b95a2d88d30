//! Finding the cgroup v2 hierarchy the connect hooks attach to.
use std::path::PathBuf;

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`
/// (`/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount))
    })
}
