//! The baseline store on disk: objects by content hash, one index per
//! policy, each file's versions; shared by the agent and `reflex baseline`
//! under a lock, and read again when another process changed it.
use std::{
    collections::BTreeMap,
    fs,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use prometheus::IntCounter;

use super::{
    baseline::{Baseline, BaselineError, DEFAULT_HISTORY, MAX_BASELINE_BYTES, io_error},
    history::{self, Entry, How},
};
use crate::fsio::{self, FileState, FsError};

/// The baseline store.
#[derive(Debug)]
pub struct BaselineStore {
    root: PathBuf,
    policies: BTreeMap<String, BTreeMap<String, Entry>>,
    /// The index directory's change time when last read or written.
    seen: Option<(i64, i64)>,
    history: usize,
    pruned: Option<IntCounter>,
}

/// The new content and state of a file that becomes its baseline.
#[derive(Clone, Copy, Debug)]
pub struct NewVersion<'a> {
    /// The content, exactly as hashed.
    pub content: &'a [u8],
    /// Its SHA-256.
    pub sha256: &'a str,
    /// Mode and owner at the time.
    pub state: &'a FileState,
    /// How it came to be.
    pub how: How,
    /// Who made it.
    pub by: Option<&'a str>,
    /// The golden file it was read from, if not the file itself.
    pub source: Option<&'a str>,
}

impl BaselineStore {
    /// Opens (creating if needed) the store under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, BaselineError> {
        let root = state_dir.join("baselines");
        for dir in [root.join("objects"), root.join("policies")] {
            fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        }
        let mut store = Self {
            root,
            policies: BTreeMap::new(),
            seen: None,
            history: DEFAULT_HISTORY,
            pruned: None,
        };
        store.reload()?;
        Ok(store)
    }

    /// Keeps at most `history` predecessors per file.
    pub fn with_history(mut self, history: usize) -> Self {
        self.history = history;
        self
    }

    /// Counts predecessors dropped past the bound in `counter`.
    pub fn with_metrics(mut self, counter: IntCounter) -> Self {
        self.pruned = Some(counter);
        self
    }

    /// The store's directory (`STATE/baselines`).
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    fn index_dir(&self) -> PathBuf {
        self.root.join("policies")
    }

    fn stamp(&self) -> Option<(i64, i64)> {
        let stat = rustix::fs::stat(self.index_dir()).ok()?;
        Some((stat.st_mtime, stat.st_mtime_nsec as i64))
    }

    fn reload(&mut self) -> Result<(), BaselineError> {
        let index_dir = self.index_dir();
        self.seen = self.stamp();
        let mut policies = BTreeMap::new();
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
        self.policies = policies;
        Ok(())
    }

    /// Reads the indexes again if another process changed them.
    pub fn refresh(&mut self) {
        if self.stamp() != self.seen
            && let Err(err) = self.reload()
        {
            tracing::error!(error = %crate::logging::error_chain(&err), "reading the baseline store again");
        }
    }

    /// Holds the store's lock and brings the indexes up to date, for a
    /// change; the lock is released when the guard drops.
    pub(super) fn lock(&mut self) -> Result<OwnedFd, BaselineError> {
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("opening", &path))?;
        let fd = OwnedFd::from(file);
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_error("locking", &path)(e.into()))?;
        if self.stamp() != self.seen {
            self.reload()?;
        }
        Ok(fd)
    }

    /// The baseline of `path` under `policy`.
    pub fn get(&self, policy: &str, path: &str) -> Option<&Baseline> {
        Some(&self.policies.get(policy)?.get(path)?.current)
    }

    /// Every version of `path` under `policy`, newest (the current) first.
    pub fn versions(&self, policy: &str, path: &str) -> Vec<&Baseline> {
        self.policies
            .get(policy)
            .and_then(|files| files.get(path))
            .map(Entry::versions)
            .unwrap_or_default()
    }

    /// Where the content of `baseline` is kept.
    pub fn object(&self, baseline: &Baseline) -> PathBuf {
        self.root.join("objects").join(&baseline.sha256)
    }

    /// Every recorded baseline of `path`, by policy.
    pub fn of_path(&self, path: &str) -> impl Iterator<Item = (&str, &Baseline)> {
        self.policies
            .iter()
            .filter_map(move |(policy, files)| Some((policy.as_str(), &files.get(path)?.current)))
    }

    /// Every baseline: (policy, path, baseline).
    pub fn list(&self) -> impl Iterator<Item = (&str, &str, &Baseline)> {
        self.policies.iter().flat_map(|(policy, files)| {
            files
                .iter()
                .map(move |(path, e)| (policy.as_str(), path.as_str(), &e.current))
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
        let how = match self.get(policy, &path.display().to_string()) {
            Some(_) => How::Updated,
            None => How::Recorded,
        };
        let source = source.map(|s| s.display().to_string());
        self.put(
            policy,
            &path.display().to_string(),
            NewVersion {
                content: &content,
                sha256: &sha256,
                state: &state,
                how,
                by: None,
                source: source.as_deref(),
            },
        )
    }

    /// Makes `new` the baseline of `path` under `policy`; the one it
    /// replaces joins the history.
    pub fn put(
        &mut self,
        policy: &str,
        path: &str,
        new: NewVersion<'_>,
    ) -> Result<Baseline, BaselineError> {
        self.write_object(new.sha256, new.content)?;
        let _guard = self.lock()?;
        let baseline = Baseline {
            sha256: new.sha256.to_string(),
            mode: new.state.mode,
            uid: new.state.uid,
            gid: new.state.gid,
            size: new.content.len() as u64,
            recorded: now(),
            source: new.source.map(str::to_string),
            version: 0,
            how: new.how,
            by: new.by.map(str::to_string),
        };
        let baseline = self.install(policy, path, baseline);
        self.save(policy)?;
        Ok(baseline)
    }

    /// Forgets the baseline of `path` under `policy`, history and all (an
    /// authorised writer removed the file).
    pub fn retire(&mut self, policy: &str, path: &str) -> Result<(), BaselineError> {
        let _guard = self.lock()?;
        let removed = self.policies.get_mut(policy).and_then(|f| f.remove(path));
        if let Some(entry) = removed {
            for old in entry.versions() {
                if !self.references(&old.sha256) {
                    let _ = fs::remove_file(self.object(old));
                }
            }
        }
        self.save(policy)
    }

    /// Makes a copy of version `wanted` (a number, or a prefix of its
    /// sha256) the baseline of `path` under `policy`, as `how`.
    pub fn reinstate(
        &mut self,
        policy: &str,
        path: &str,
        wanted: &str,
        how: How,
    ) -> Result<Baseline, BaselineError> {
        let _guard = self.lock()?;
        let versions = self.versions(policy, path);
        if versions.is_empty() {
            return Err(BaselineError::Missing {
                policy: policy.into(),
                path: path.into(),
            });
        }
        let old = history::select(&versions, wanted).cloned().ok_or_else(|| {
            BaselineError::NoVersion {
                path: path.into(),
                wanted: wanted.into(),
            }
        })?;
        let baseline = Baseline {
            recorded: now(),
            how,
            by: Some(format!("version {}", old.version)),
            ..old
        };
        let baseline = self.install(policy, path, baseline);
        self.save(policy)?;
        Ok(baseline)
    }

    /// Puts `baseline` in as the current version (numbered after the
    /// last), prunes the history and drops objects no version needs.
    fn install(&mut self, policy: &str, path: &str, mut baseline: Baseline) -> Baseline {
        let files = self.policies.entry(policy.to_string()).or_default();
        let dropped = match files.get_mut(path) {
            Some(entry) => {
                baseline.version = entry.next_version();
                entry.push(baseline.clone(), self.history)
            }
            None => {
                baseline.version = 1;
                files.insert(path.to_string(), Entry::new(baseline.clone()));
                Vec::new()
            }
        };
        if let Some(counter) = &self.pruned {
            counter.inc_by(dropped.len() as u64);
        }
        for old in dropped {
            if !self.references(&old.sha256) {
                let _ = fs::remove_file(self.object(&old));
            }
        }
        baseline
    }

    fn references(&self, sha256: &str) -> bool {
        self.policies
            .values()
            .flat_map(|files| files.values())
            .any(|entry| entry.versions().iter().any(|b| b.sha256 == sha256))
    }

    fn write_object(&self, sha256: &str, content: &[u8]) -> Result<(), BaselineError> {
        let object = self.root.join("objects").join(sha256);
        if object.exists() {
            return Ok(());
        }
        let temp = object.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&temp, content)
            .and_then(|()| fs::File::open(&temp)?.sync_all())
            .and_then(|()| fs::rename(&temp, &object))
            .map_err(io_error("writing baseline object", &object))
    }

    /// Writes the index of `policy` atomically (the lock is held).
    fn save(&mut self, policy: &str) -> Result<(), BaselineError> {
        let path = self.index_dir().join(format!("{policy}.json"));
        let temp = path.with_extension("json.tmp");
        let files = self.policies.get(policy).cloned().unwrap_or_default();
        let text = serde_json::to_vec_pretty(&files).expect("baselines serialise");
        let written = fs::write(&temp, text)
            .and_then(|()| fs::File::open(&temp)?.sync_all())
            .and_then(|()| fs::rename(&temp, &path))
            .map_err(io_error("writing baseline index", &path));
        self.seen = self.stamp();
        written
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
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

    #[test]
    fn an_index_written_before_history_existed_still_reads() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("baselines/policies");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("p.json"),
            r#"{"/etc/a": {"sha256": "ab", "mode": 420, "uid": 0, "gid": 0, "size": 2, "recorded": "2026-01-01T00:00:00Z"}}"#,
        )
        .unwrap();
        let store = BaselineStore::open(state.path()).unwrap();
        let b = store.get("p", "/etc/a").unwrap();
        assert_eq!((b.version, b.how), (1, How::Recorded));
    }

    #[test]
    fn history_is_bounded_counted_and_unneeded_objects_go() {
        let state = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let a = files.path().join("a.conf");
        let counter = IntCounter::new("t", "t").unwrap();
        let mut store = BaselineStore::open(state.path())
            .unwrap()
            .with_history(2)
            .with_metrics(counter.clone());
        let mut hashes = Vec::new();
        for i in 0..5 {
            fs::write(&a, format!("v{i}\n")).unwrap();
            hashes.push(store.record("p", &a, None).unwrap().sha256);
        }
        let path = a.to_str().unwrap();
        let versions: Vec<u64> = store
            .versions("p", path)
            .iter()
            .map(|b| b.version)
            .collect();
        assert_eq!(versions, [5, 4, 3], "the current and two predecessors");
        assert_eq!(counter.get(), 2);
        assert!(
            !state
                .path()
                .join("baselines/objects")
                .join(&hashes[0])
                .exists()
        );
        assert!(
            state
                .path()
                .join("baselines/objects")
                .join(&hashes[2])
                .exists()
        );

        let back = store.reinstate("p", path, "3", How::Rollback).unwrap();
        assert_eq!(
            (back.version, back.sha256.as_str()),
            (6, hashes[2].as_str())
        );
        assert!(store.reinstate("p", path, "1", How::Rollback).is_err());
    }

    #[test]
    fn a_change_by_another_process_is_read_at_the_next_look() {
        let state = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let a = files.path().join("a.conf");
        fs::write(&a, "one\n").unwrap();
        let mut agent = BaselineStore::open(state.path()).unwrap();
        agent.record("p", &a, None).unwrap();
        let mut command = BaselineStore::open(state.path()).unwrap();
        fs::write(&a, "two\n").unwrap();
        let two = command.record("p", &a, None).unwrap();
        agent.refresh();
        assert_eq!(agent.get("p", a.to_str().unwrap()), Some(&two));
    }
}
