//! What a cgroup v2 path says of the processes in it: the systemd unit
//! (`system.slice/nginx.service` → `nginx.service`) and the container, by
//! the names each runtime gives the cgroups it makes.
use super::{Container, Runtime};

/// The systemd unit of `path`, as systemd itself names it
/// (`cg_path_get_unit`): the first component below the slices that is a
/// service or a scope, so a unit's own sub-cgroups
/// (`foo.service/payload`, delegation) still belong to it.
pub fn unit(path: &str) -> Option<String> {
    components(path)
        .find(|c| !c.ends_with(".slice"))
        .filter(|c| is_unit(c))
        .map(str::to_owned)
}

/// The unit a user's service manager runs, for a path under
/// `user@UID.service` (`user@1000.service/app.slice/foo.service` →
/// `foo.service`), as `systemctl --user` names it.
pub fn user_unit(path: &str) -> Option<String> {
    let mut parts = components(path).skip_while(|c| c.ends_with(".slice"));
    let manager = parts.next()?;
    if !(manager.starts_with("user@") && manager.ends_with(".service")) {
        return None;
    }
    parts
        .find(|c| !c.ends_with(".slice"))
        .filter(|c| is_unit(c))
        .map(str::to_owned)
}

fn is_unit(name: &str) -> bool {
    name.ends_with(".service") || name.ends_with(".scope")
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// The container `path` belongs to: the innermost component that names
/// one (a container may run its own systemd below its cgroup). Below a
/// user's own service manager (`user@UID.service`) the user names the
/// cgroups, so nothing there is taken for a container, rootless ones
/// included; the runtimes' cgroupfs roots (`docker`, `kubepods`,
/// `libpod_parent`) and `machine.slice` count only at the top.
pub fn container(path: &str) -> Option<Container> {
    let parts: Vec<&str> = components(path).collect();
    let delegated = parts
        .iter()
        .position(|p| p.starts_with("user@") && p.ends_with(".service"))
        .unwrap_or(parts.len());
    let kube = parts.first().is_some_and(|p| p.starts_with("kubepods"));
    (0..delegated).rev().find_map(|i| {
        // Only a top-level parent names a runtime's root.
        let parent = (i == 1).then(|| parts[0]);
        named(parts[i], parent, kube && i > 0)
    })
}

/// One component: `name`, under `parent`, with `kube` when a kubepods
/// cgroup is above it.
fn named(name: &str, parent: Option<&str>, kube: bool) -> Option<Container> {
    let scoped = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".scope"))
            .filter(|id| is_id(id))
    };
    let found = |runtime, id: &str| {
        Some(Container {
            id: id.to_owned(),
            runtime,
            name: None,
            image: None,
        })
    };
    // The systemd cgroup driver: a scope per container.
    if let Some(id) = scoped("docker-") {
        return found(Runtime::Docker, id);
    }
    if let Some(id) = scoped("cri-containerd-") {
        return found(Runtime::Containerd, id);
    }
    if let Some(id) = scoped("crio-") {
        return found(Runtime::CriO, id);
    }
    if let Some(id) = scoped("libpod-") {
        return found(Runtime::Podman, id);
    }
    // systemd-nspawn: a service per machine, or a scope machined made.
    if parent == Some("machine.slice") {
        let machine = name
            .strip_prefix("systemd-nspawn@")
            .and_then(|rest| rest.strip_suffix(".service"))
            .or_else(|| {
                name.strip_prefix("machine-")
                    .and_then(|rest| rest.strip_suffix(".scope"))
            });
        if let Some(machine) = machine.filter(|m| !m.is_empty()) {
            let machine = unescape(machine);
            return Some(Container {
                id: machine.clone(),
                runtime: Runtime::Nspawn,
                name: Some(machine),
                image: None,
            });
        }
    }
    // The cgroupfs driver: a directory named by the id under the runtime's.
    if is_id(name) {
        match parent {
            Some("docker") => return found(Runtime::Docker, name),
            Some("libpod_parent") => return found(Runtime::Podman, name),
            _ if kube => return found(Runtime::Cri, name),
            _ => {}
        }
    }
    if parent == Some("libpod_parent")
        && let Some(id) = name.strip_prefix("libpod-").filter(|id| is_id(id))
    {
        return found(Runtime::Podman, id);
    }
    None
}

/// A runtime's container id: 64 lowercase hex digits.
fn is_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Undoes systemd's unit name escaping (`\x2d` for `-`).
fn unescape(name: &str) -> String {
    let mut out = Vec::with_capacity(name.len());
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 2..i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], bytes.get(i + 1), hex) {
            (b'\\', Some(b'x'), Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
