//! The cgroup v2 hierarchy as the kernel shows it: an id is the cgroup
//! directory's file handle (`FILEID_KERNFS`), so `open_by_handle_at` on the
//! mount turns one into its directory in one call, whatever its depth.
use std::{
    io::Read as _,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use super::{Container, Hierarchy, ResolveError, Runtime};

/// The kernel's handle type for kernfs nodes (cgroups): the 64-bit id.
const FILEID_KERNFS: i32 = 0xfe;

/// Where Docker keeps each container's configuration (its default
/// `data-root`): `ID/config.v2.json` names the container and its image.
const DOCKER_CONTAINERS: &str = "/var/lib/docker/containers";

/// A container's configuration is read only up to this: it is a few KiB,
/// and a larger one is not worth the stall of a first event.
const CONFIG_MAX_BYTES: u64 = 256 * 1024;

/// A `struct file_handle` holding a kernfs id.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// The mounted cgroup v2 hierarchy.
#[derive(Debug)]
pub struct Cgroupfs {
    mount: PathBuf,
    dir: OwnedFd,
    docker: PathBuf,
}

impl Cgroupfs {
    /// Opens the hierarchy mounted at `mount`.
    pub fn open(mount: &Path) -> std::io::Result<Self> {
        let dir = std::fs::File::open(mount)?;
        Ok(Self {
            mount: mount.to_owned(),
            dir: dir.into(),
            docker: PathBuf::from(DOCKER_CONTAINERS),
        })
    }

    fn open_id(&self, id: u64) -> Result<OwnedFd, ResolveError> {
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: `handle` is a `struct file_handle` header followed by the
        // `handle_bytes` (8) bytes it announces, alive for the call; the
        // returned descriptor, if any, is owned by no one else.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.dir.as_raw_fd(),
                (&mut handle as *mut KernfsHandle).cast::<libc::file_handle>(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ESTALE) | Some(libc::ENOENT) => ResolveError::Gone(id),
                _ => ResolveError::Failed { id, source: err },
            });
        }
        // SAFETY: `fd` was just returned by the kernel and is ours alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `full` (a path in the agent's view) below the mount, `/` for the root.
    fn below_mount(&self, full: &Path) -> Option<String> {
        let rest = full.strip_prefix(&self.mount).ok()?;
        Some(format!("/{}", rest.to_string_lossy()))
    }
}

impl Hierarchy for Cgroupfs {
    fn path_of(&self, id: u64) -> Result<String, ResolveError> {
        let fd = self.open_id(id)?;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|source| ResolveError::Failed { id, source })?;
        let link = link.to_string_lossy();
        if link.ends_with(" (deleted)") {
            return Err(ResolveError::Gone(id));
        }
        self.below_mount(Path::new(link.as_ref()))
            .ok_or_else(|| ResolveError::Failed {
                id,
                source: std::io::Error::other(format!("{link} is outside the cgroup mount")),
            })
    }

    fn exists(&self, id: u64) -> bool {
        !matches!(self.open_id(id), Err(ResolveError::Gone(_)))
    }

    fn of_pid(&self, pid: u32) -> Option<(u64, String)> {
        use std::os::unix::fs::MetadataExt as _;
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let full = self.mount.join(path.trim_start_matches('/'));
        // A cgroup's inode number is its id.
        let id = std::fs::metadata(&full).ok()?.ino();
        Some((id, path.to_owned()))
    }

    fn describe(&self, container: &mut Container) {
        if container.runtime == Runtime::Docker {
            let config = self.docker.join(&container.id).join("config.v2.json");
            if let Some((name, image)) = docker_config(&config) {
                container.name = name;
                container.image = image;
            }
        }
    }
}

/// The name and image in a Docker container's `config.v2.json`.
fn docker_config(path: &Path) -> Option<(Option<String>, Option<String>)> {
    let mut text = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(CONFIG_MAX_BYTES)
        .read_to_end(&mut text)
        .ok()?;
    parse_docker_config(&text)
}

fn parse_docker_config(text: &[u8]) -> Option<(Option<String>, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "Name")]
        name: Option<String>,
        #[serde(rename = "Config")]
        config: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "Image")]
        image: Option<String>,
    }
    let config: Config = serde_json::from_slice(text).ok()?;
    let name = config.name.map(|n| n.trim_start_matches('/').to_owned());
    Some((name, config.config.and_then(|c| c.image)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names_and_images() {
        let text = br#"{"ID":"abc","Name":"/api-7f9c","Config":{"Image":"nginx:1.27","Env":[]},"State":{}}"#;
        assert_eq!(
            parse_docker_config(text),
            Some((Some("api-7f9c".into()), Some("nginx:1.27".into())))
        );
        assert_eq!(parse_docker_config(b"{"), None);
    }

    #[test]
    fn paths_below_the_mount() {
        let fs = Cgroupfs::open(Path::new("/")).expect("open /");
        let fs = Cgroupfs {
            mount: PathBuf::from("/sys/fs/cgroup/unified"),
            ..fs
        };
        let below = |p: &str| fs.below_mount(Path::new(p));
        assert_eq!(below("/sys/fs/cgroup/unified").as_deref(), Some("/"));
        assert_eq!(
            below("/sys/fs/cgroup/unified/system.slice/a.service").as_deref(),
            Some("/system.slice/a.service")
        );
        assert_eq!(below("/elsewhere"), None);
    }
}
