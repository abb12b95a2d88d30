//! Where the exec policies' paths lead: globs expanded over the files
//! that exist, the identity of a file, the script an interpreter runs,
//! and the room the kernel's kill maps need.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::MAX_WALK;
use crate::{
    events::FileId,
    exec_kills::NameRule,
    fsio,
    loader::exec_kill::DEFAULT_ENTRIES,
    policy::{PolicySet, model::Trigger, value::PathGlob},
};

/// Entries the `EXEC_KILL` map should have room for with `set` loaded:
/// twice what its exec policies name today, for files that appear.
pub fn kernel_room(set: &PolicySet) -> u32 {
    let mut files = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    for glob in exec_paths(set) {
        expand(glob, &mut files, &mut dirs);
    }
    (files.len().saturating_mul(2) as u32).max(DEFAULT_ENTRIES)
}

/// Every path or glob of the exec policies in `set`.
pub(super) fn exec_paths(set: &PolicySet) -> impl Iterator<Item = &PathGlob> {
    set.policies().iter().flat_map(|p| match &p.trigger {
        Trigger::Exec { paths } => paths.as_slice(),
        _ => &[],
    })
}

/// Adds the files `glob` names to `files` and the directories a file it
/// names may appear in to `dirs`.
pub(super) fn expand(
    glob: &PathGlob,
    files: &mut BTreeMap<String, FileId>,
    dirs: &mut BTreeSet<String>,
) {
    if glob.is_literal() {
        let path = glob.as_str();
        dirs.insert(glob.literal_dir().to_string());
        if let Some(id) = identity(Path::new(path)) {
            files.insert(path.to_string(), id);
        }
        return;
    }
    let base = glob.literal_dir();
    let matcher = glob.matcher();
    let depth = glob.walk_depth();
    for (seen, entry) in walkdir::WalkDir::new(base)
        .max_depth(depth)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .enumerate()
    {
        if seen >= MAX_WALK {
            tracing::warn!(
                glob = glob.as_str(),
                limit = MAX_WALK,
                "exec glob expands to too many files; the rest are matched when they run"
            );
            break;
        }
        let path = entry.path().to_string_lossy();
        if entry.file_type().is_dir() {
            if entry.depth() < depth {
                dirs.insert(path.into_owned());
            }
        } else if matcher.is_match(entry.path())
            && let Some(id) = identity(entry.path())
        {
            files.insert(path.into_owned(), id);
        }
    }
}

/// The name the kernel can match for `glob` in its directory, whatever the
/// file's identity: a literal path's last component, or the start of a
/// last component `start*` (nothing else varying). Other globs are matched
/// by the identities of their files only.
pub(super) fn name_rule(glob: &PathGlob) -> Option<NameRule> {
    let (dir, last) = glob.as_str().rsplit_once('/')?;
    let dir = if dir.is_empty() { "/" } else { dir };
    let meta = ['*', '?', '[', '{', '\\'];
    if dir.contains(meta) {
        return None;
    }
    let (name, prefix) = match last.strip_suffix('*') {
        _ if glob.is_literal() => (last, false),
        Some(start) if !start.is_empty() && !start.contains(meta) => (start, true),
        _ => return None,
    };
    let meta = fs::metadata(dir).ok().filter(fs::Metadata::is_dir)?;
    Some(NameRule {
        dir: FileId {
            dev: fsio::encode_dev(meta.dev()),
            ino: meta.ino(),
        },
        name: name.as_bytes().to_vec(),
        prefix,
    })
}

/// Identity of the regular file `path` names, following symlinks.
pub(super) fn identity(path: &Path) -> Option<FileId> {
    let meta = fs::metadata(path).ok()?;
    meta.is_file().then(|| FileId {
        dev: fsio::encode_dev(meta.dev()),
        ino: meta.ino(),
    })
}

/// The file `filename` names for process `pid`, resolved, when it is not
/// the executable the kernel loaded (`exe`, `id`): the script an
/// interpreter runs. Looked up through the process's own root and working
/// directory; a descriptor name (`/dev/fd/N`) is not followed, as it would
/// name the agent's own descriptor.
pub(super) fn script_of(
    pid: u32,
    filename: &str,
    exe: Option<&str>,
    id: Option<FileId>,
) -> Option<String> {
    if Some(filename) == exe || filename.starts_with("/dev/fd/") || filename.starts_with("/proc/") {
        return None;
    }
    let through_process = match filename.strip_prefix('/') {
        Some(rest) => PathBuf::from(format!("/proc/{pid}/root")).join(rest),
        None => PathBuf::from(format!("/proc/{pid}/cwd")).join(filename),
    };
    let real = fs::canonicalize(through_process)
        .or_else(|_| match filename.starts_with('/') {
            // The process is gone: an absolute name still says which file.
            true => fs::canonicalize(filename),
            false => Err(std::io::ErrorKind::NotFound.into()),
        })
        .ok()?;
    let real_text = real.to_string_lossy().into_owned();
    if Some(real_text.as_str()) == exe || identity(&real).is_some_and(|i| Some(i) == id) {
        return None;
    }
    Some(real_text)
}
