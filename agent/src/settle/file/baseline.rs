//! Baselines: the recorded good state of each file a `revert` policy
//! covers, in a content-addressed store under the state directory that
//! survives restarts (`baselines/objects/<sha256>`, and one index per
//! policy in `baselines/policies/<policy>.json`).
use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    events::file::Snapshot,
    fsio::{self, FsError},
};

/// Largest file a baseline is kept for.
pub const MAX_BASELINE_BYTES: u64 = 64 << 20;

/// The recorded state of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// SHA-256 of the content (the object's name).
    pub sha256: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// When it was recorded (RFC 3339).
    pub recorded: String,
    /// Golden file the content came from, if not the file itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Baseline {
    /// The recorded state as events carry it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sha256: Some(self.sha256.clone()),
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
        }
    }

    /// Whether `path` is as recorded: a regular file with the same content,
    /// mode, owner and group.
    pub fn matches(&self, path: &Path) -> Result<bool, FsError> {
        fsio::has_state(path, &self.sha256, self.size, self.ownership())
    }

    /// Mode and owner, as a restore sets them.
    pub fn ownership(&self) -> fsio::Ownership {
        fsio::Ownership {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// Where the content with `sha256` is kept in the store under `state_dir`.
pub fn object_path(state_dir: &Path, sha256: &str) -> PathBuf {
    state_dir.join("baselines").join("objects").join(sha256)
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// A store file could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// An index file is not valid JSON.
    #[error("baseline index {path} is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The watched file could not be read.
    #[error(transparent)]
    File(#[from] FsError),
}

/// The baseline store.
#[derive(Debug)]
pub struct BaselineStore {
    root: PathBuf,
    policies: BTreeMap<String, BTreeMap<String, Baseline>>,
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BaselineError {
    let path = path.to_owned();
    move |source| BaselineError::Io { what, path, source }
}

impl BaselineStore {
    /// Opens (creating if needed) the store under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, BaselineError> {
        let root = state_dir.join("baselines");
        for dir in [root.join("objects"), root.join("policies")] {
            fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        }
        let mut policies = BTreeMap::new();
        let index_dir = root.join("policies");
        for entry in fs::read_dir(&index_dir).map_err(io_error("reading", &index_dir))? {
            let path = entry.map_err(io_error("reading", &index_dir))?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let text = fs::read_to_string(&path).map_err(io_error("reading", &path))?;
            let files = serde_json::from_str(&text).map_err(|source| BaselineError::Corrupt {
                path: path.clone(),
                source,
            })?;
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            policies.insert(name, files);
        }
        Ok(Self { root, policies })
    }

    /// The baseline of `path` under `policy`.
    pub fn get(&self, policy: &str, path: &str) -> Option<&Baseline> {
        self.policies.get(policy)?.get(path)
    }

    /// Where the content of `baseline` is kept.
    pub fn object(&self, baseline: &Baseline) -> PathBuf {
        self.root.join("objects").join(&baseline.sha256)
    }

    /// Every recorded baseline of `path`, by policy.
    pub fn of_path(&self, path: &str) -> impl Iterator<Item = (&str, &Baseline)> {
        self.policies
            .iter()
            .filter_map(move |(policy, files)| Some((policy.as_str(), files.get(path)?)))
    }

    /// Every baseline: (policy, path, baseline).
    pub fn list(&self) -> impl Iterator<Item = (&str, &str, &Baseline)> {
        self.policies.iter().flat_map(|(policy, files)| {
            files
                .iter()
                .map(move |(path, b)| (policy.as_str(), path.as_str(), b))
        })
    }

    /// Records the current state of `path` (its content from `source` when
    /// given) as the baseline of `policy`, and saves the index.
    pub fn record(
        &mut self,
        policy: &str,
        path: &Path,
        source: Option<&Path>,
    ) -> Result<Baseline, BaselineError> {
        let state =
            fsio::state(path)?.ok_or_else(|| FsError::NotAFile(path.display().to_string()))?;
        let content = fsio::read_content(source.unwrap_or(path), MAX_BASELINE_BYTES)?;
        let sha256 = fsio::hash_reader(content.as_slice()).map_err(io_error("hashing", path))?;
        let object = self.root.join("objects").join(&sha256);
        if !object.exists() {
            let temp = object.with_extension("tmp");
            fs::write(&temp, &content)
                .and_then(|()| fs::File::open(&temp)?.sync_all())
                .and_then(|()| fs::rename(&temp, &object))
                .map_err(io_error("writing baseline object", &object))?;
        }
        let baseline = Baseline {
            sha256,
            mode: state.mode,
            uid: state.uid,
            gid: state.gid,
            size: content.len() as u64,
            recorded: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            source: source.map(|s| s.display().to_string()),
        };
        self.policies
            .entry(policy.to_string())
            .or_default()
            .insert(path.display().to_string(), baseline.clone());
        self.save(policy)?;
        Ok(baseline)
    }

    /// Writes the index of `policy` atomically.
    fn save(&self, policy: &str) -> Result<(), BaselineError> {
        let path = self.root.join("policies").join(format!("{policy}.json"));
        let temp = path.with_extension("json.tmp");
        let files = self.policies.get(policy).cloned().unwrap_or_default();
        let text = serde_json::to_vec_pretty(&files).expect("baselines serialise");
        fs::write(&temp, text)
            .and_then(|()| fs::File::open(&temp)?.sync_all())
            .and_then(|()| fs::rename(&temp, &path))
            .map_err(io_error("writing baseline index", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_share_objects() {
        let state = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let (a, b) = (files.path().join("a.conf"), files.path().join("b.conf"));
        fs::write(&a, "same\n").unwrap();
        fs::write(&b, "same\n").unwrap();
        let mut store = BaselineStore::open(state.path()).unwrap();
        let first = store.record("p", &a, None).unwrap();
        let second = store.record("p", &b, None).unwrap();
        assert_eq!(first.sha256, second.sha256);
        assert_eq!(fs::read(store.object(&first)).unwrap(), b"same\n");

        let reopened = BaselineStore::open(state.path()).unwrap();
        assert_eq!(reopened.get("p", a.to_str().unwrap()), Some(&first));
        assert_eq!(reopened.list().count(), 2);
    }
}
