//! What taking a policy set into use needs to know of the filesystem,
//! gathered per path or glob on the filesystem pool ([`Walk::run`]), so a
//! reload never waits on a filesystem in the settler: the files a glob
//! covers and their state, the directories they live in and every
//! directory on the way (for fanotify's marks), and, per file, whether it
//! still matches its baselines. A glob whose filesystem does not answer is
//! left out of the set until the next reload (logged, and counted as a
//! `watch` job that failed).
use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use reflex_wire::FileKey;

use super::{MAX_WALK, dir_key};
use crate::{
    events::file::Snapshot,
    fsio::{self, FileState},
    logging::error_chain,
    policy::value::PathGlob,
    settle::file::baseline::Baseline,
};

/// What to gather for one path or glob.
#[derive(Debug)]
pub struct WalkJob {
    /// The path or glob.
    pub glob: PathGlob,
    /// Paths it matches that keep a baseline, whether or not a file is
    /// there now, and every baseline (policy, version) of each.
    pub recorded: BTreeMap<String, Vec<(String, Baseline)>>,
    /// Whether files here keep baselines (a `revert` policy covers it):
    /// then interrupted reverts are cleaned up and drift is looked for.
    pub baselines: bool,
    /// Whether a policy had it in force before: a file with no baseline
    /// appeared while no agent ran (drift, hashed for its record).
    pub known: bool,
}

/// What the pool found for one path or glob.
#[derive(Debug, Default)]
pub struct Walk {
    /// Files it covers (a literal path whether or not a file is there) and
    /// the recorded paths, with their state.
    pub(super) files: Vec<(String, Option<FileState>)>,
    /// Those watched whether or not a file is there: the literal path, the
    /// recorded ones.
    pub(super) kept: Vec<String>,
    /// Directories files may appear in, with their identity.
    pub(super) dirs: Vec<(String, Option<FileKey>)>,
    /// Every directory on the way to those (but `/`), with its identity.
    pub(super) ancestors: HashMap<String, Option<FileKey>>,
    /// Per file: how it compares with its baselines.
    pub facts: HashMap<String, Facts>,
}

/// How a file compares with its baselines.
#[derive(Debug, Default)]
pub struct Facts {
    /// Whether it matches each baseline, by policy.
    pub matches: Vec<(String, bool)>,
    /// Its state as events carry it (hashed), when one differs or it has
    /// none.
    pub after: Option<Snapshot>,
}

impl Walk {
    /// Gathers what `job` asks (may hang with the filesystem).
    pub fn run(job: WalkJob) -> Self {
        let mut walk = Self::default();
        let glob = &job.glob;
        if glob.is_literal() {
            let path = glob.as_str();
            if let Some(parent) = Path::new(path).parent() {
                walk.dirs
                    .push((parent.display().to_string(), dir_key(parent)));
            }
            walk.files.push((
                path.to_string(),
                fsio::state(Path::new(path)).ok().flatten(),
            ));
            walk.kept.push(path.to_string());
        } else {
            let matcher = glob.matcher();
            let entries = walkdir::WalkDir::new(glob.literal_dir())
                .max_depth(glob.walk_depth())
                .follow_links(false)
                .into_iter()
                .filter_map(Result::ok);
            for (seen, entry) in entries.enumerate() {
                if seen >= MAX_WALK {
                    tracing::warn!(
                        glob = glob.as_str(),
                        limit = MAX_WALK,
                        "glob expands to too many files; watching the first ones"
                    );
                    break;
                }
                let path = entry.path();
                if entry.file_type().is_dir() {
                    walk.dirs.push((path.display().to_string(), dir_key(path)));
                } else if entry.file_type().is_file()
                    && matcher.is_match(path)
                    && !entry.file_name().to_str().is_some_and(fsio::is_own_temp)
                {
                    let state = fsio::state(path).ok().flatten();
                    walk.files.push((path.display().to_string(), state));
                }
            }
        }
        for path in job.recorded.keys() {
            walk.kept.push(path.clone());
            if walk.files.iter().all(|(p, _)| p != path) {
                let state = fsio::state(Path::new(path)).ok().flatten();
                walk.files.push((path.clone(), state));
            }
            if let Some(parent) = Path::new(path).parent() {
                walk.dirs
                    .push((parent.display().to_string(), dir_key(parent)));
            }
        }
        let files = walk.files.iter().map(|(p, _)| p);
        walk.ancestors = ancestors(files.chain(walk.dirs.iter().map(|(p, _)| p)));
        if job.baselines {
            walk.check(&job.recorded, job.known);
        }
        walk
    }

    /// Cleans up after interrupted reverts and compares each file with its
    /// baselines.
    fn check(&mut self, recorded: &BTreeMap<String, Vec<(String, Baseline)>>, known: bool) {
        for (path, state) in &self.files {
            let file = Path::new(path);
            match fsio::remove_stale_temps(file) {
                Ok(0) => {}
                Ok(removed) => tracing::warn!(
                    path,
                    removed,
                    "removed temporary files an interrupted revert left"
                ),
                Err(err) => {
                    tracing::debug!(path, error = %error_chain(&err), "looking for interrupted reverts")
                }
            }
            let matches: Vec<(String, bool)> = recorded
                .get(path)
                .into_iter()
                .flatten()
                .map(|(policy, b)| (policy.clone(), b.matches(file).unwrap_or(false)))
                .collect();
            // Hashed for a drift record: a file that differs, or one no
            // baseline knows where a policy was in force (it appeared while
            // no agent ran).
            let after = ((matches.is_empty() && known) || matches.iter().any(|(_, m)| !m))
                .then(|| crate::settle::file::record::after_state(file, state.as_ref(), true))
                .flatten();
            self.facts.insert(path.clone(), Facts { matches, after });
        }
    }
}

/// Every directory on the way to `paths` (but `/`), with its identity now.
fn ancestors<'a>(paths: impl Iterator<Item = &'a String>) -> HashMap<String, Option<FileKey>> {
    let mut dirs = HashMap::new();
    for path in paths {
        let mut at = path.as_str();
        while let Some(end) = at.rfind('/') {
            at = &at[..end];
            if at.is_empty() || dirs.contains_key(at) {
                break;
            }
            let key = std::fs::symlink_metadata(at)
                .ok()
                .filter(std::fs::Metadata::is_dir)
                .map(|meta| {
                    use std::os::unix::fs::MetadataExt as _;
                    FileKey {
                        dev: fsio::encode_dev(meta.dev()),
                        _pad: 0,
                        ino: meta.ino(),
                    }
                });
            dirs.insert(at.to_string(), key);
        }
    }
    dirs
}
