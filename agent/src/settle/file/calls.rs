//! Which watched file a path call (chmod, rename, unlink ... by name)
//! concerned: the kernel matches such calls by the last component's name
//! only. Files fanotify marks are left to fanotify; for the others, a call
//! authorises only when it named the watched path itself.

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
