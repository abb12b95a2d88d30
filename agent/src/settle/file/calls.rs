//! Which watched file a path call (chmod, rename, unlink ... by name)
//! concerned: the kernel matches such calls by the last component's name
//! only, the agent resolves the rest as the caller saw it.
use std::path::{Path, PathBuf};

/// Whether a path call with arguments `arg` and `arg2` by `pid` concerned
/// the file at `path`: `Some(false)` when every argument resolves (through
/// the caller's root and working directory) to another path, `None` when
/// one cannot be resolved (the caller is gone, a directory was removed).
pub(super) fn concerns(arg: &str, arg2: &str, path: &str, pid: u32) -> Option<bool> {
    let mut unknown = false;
    for arg in [arg, arg2].into_iter().filter(|a| !a.is_empty()) {
        match resolve(arg, pid) {
            Some(resolved) if resolved == Path::new(path) => return Some(true),
            Some(_) => {}
            None => unknown = true,
        }
    }
    (!unknown).then_some(false)
}

/// The path `arg`, as process `pid` named it, in the agent's view: its
/// directory resolved, its last component as given.
fn resolve(arg: &str, pid: u32) -> Option<PathBuf> {
    let spelled = Path::new(arg);
    let name = spelled.file_name()?;
    let dir = spelled.parent().filter(|d| !d.as_os_str().is_empty());
    let base = match (arg.starts_with('/'), pid) {
        (_, 0) => return None,
        (true, pid) => PathBuf::from(format!("/proc/{pid}/root")),
        (false, pid) => PathBuf::from(format!("/proc/{pid}/cwd")),
    };
    let through_process = match dir {
        Some(d) => base.join(d.strip_prefix("/").unwrap_or(d)),
        None => base,
    };
    let resolved = std::fs::canonicalize(through_process).or_else(|err| match dir {
        // The caller is gone: an absolute name still says which directory.
        Some(d) if arg.starts_with('/') => std::fs::canonicalize(d),
        _ => Err(err),
    });
    Some(resolved.ok()?.join(name))
}

/// Whether the path argument `arg` names `path` itself (absolute, with
/// repeated slashes folded).
pub(super) fn names(arg: &str, path: &str) -> bool {
    if !arg.starts_with('/') {
        return false;
    }
    let mut folded = String::with_capacity(arg.len());
    for part in arg.split('/').filter(|p| !p.is_empty()) {
        folded.push('/');
        folded.push_str(part);
    }
    folded == path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_concerns_the_path_it_resolves_to_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("etc")).unwrap();
        std::fs::create_dir(real.join("tmp")).unwrap();
        std::os::unix::fs::symlink(real.join("etc"), real.join("link")).unwrap();
        let watched = real.join("etc/app.conf");
        let watched = watched.to_str().unwrap();
        let me = std::process::id();
        let arg = |p: &str| real.join(p).to_str().unwrap().to_string();
        assert_eq!(concerns(&arg("etc/app.conf"), "", watched, me), Some(true));
        assert_eq!(
            concerns(&arg("etc//./app.conf"), "", watched, me),
            Some(true)
        );
        assert_eq!(concerns(&arg("link/app.conf"), "", watched, me), Some(true));
        assert_eq!(concerns(&arg("tmp/app.conf"), "", watched, me), Some(false));
        assert_eq!(
            concerns(&arg("tmp/app.conf"), &arg("etc/app.conf"), watched, me),
            Some(true),
            "a rename onto the path"
        );
        assert_eq!(concerns(&arg("gone/app.conf"), "", watched, me), None);
        assert_eq!(concerns("app.conf", "", watched, 0), None);
    }
}
