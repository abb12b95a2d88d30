//! The baseline store on disk: objects by content hash, one index per
//! policy, each file's versions; shared by the agent and `reflex baseline`
//! under a lock, and read again when another process changed it.
use std::{
    collections::BTreeMap,
    fs,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use prometheus::{IntCounter, IntCounterVec};

use super::{
    baseline::{
        Baseline, BaselineError, DEFAULT_HISTORY, DEFAULT_MAX_XATTR_BYTES, MAX_BASELINE_BYTES,
        io_error, load_xattrs,
    },
    history::{self, Entry, How},
};
use crate::{
    fsio::{
        self, FileState, FsError,
        xattr::{self, XattrRead, Xattrs},
    },
    logging::error_chain,
};

/// The baseline store.
#[derive(Debug)]
pub struct BaselineStore {
    root: PathBuf,
    policies: BTreeMap<String, BTreeMap<String, Entry>>,
    /// The index directory's change time when last read or written.
    seen: Option<(i64, i64)>,
    history: usize,
    pruned: Option<IntCounter>,
    max_xattr_bytes: u64,
    xattrs_refused: Option<IntCounterVec>,
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
    /// Its extended attributes ([`BaselineStore::read_xattrs`]); `None`
    /// when they are not recorded.
    pub xattrs: Option<&'a Xattrs>,
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
            max_xattr_bytes: DEFAULT_MAX_XATTR_BYTES,
            xattrs_refused: None,
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

    /// Keeps at most `bytes` of extended attributes per file version.
    pub fn with_max_xattr_bytes(mut self, bytes: u64) -> Self {
        self.max_xattr_bytes = bytes;
        self
    }

    /// Counts attribute sets not kept in `counter` (label `reason`).
    pub fn with_xattr_metrics(mut self, counter: IntCounterVec) -> Self {
        self.xattrs_refused = Some(counter);
        self
    }

    /// The extended attributes of `path` to keep in a baseline; `None`
    /// (logged and counted) when they exceed the bound, have a name the
    /// store cannot keep, or cannot be read: such a version does not compare
    /// them.
    pub fn read_xattrs(&self, path: &Path) -> Option<Xattrs> {
        let (reason, detail) = match xattr::read(path, self.max_xattr_bytes) {
            Ok(XattrRead::Recorded(x)) => return Some(x),
            Ok(XattrRead::TooLarge { bytes }) => (
                "too_large",
                format!(
                    "{bytes} bytes or more, over baselines.max_xattr_bytes ({})",
                    self.max_xattr_bytes
                ),
            ),
            Ok(XattrRead::NameNotUtf8) => ("name", "a name that is not UTF-8".to_string()),
            Err(err) => ("read", error_chain(&err)),
        };
        tracing::warn!(
            path = %path.display(),
            reason,
            detail,
            "extended attributes not recorded in the baseline: they will be neither compared nor restored"
        );
        if let Some(counter) = &self.xattrs_refused {
            counter.with_label_values(&[reason]).inc();
        }
        None
    }

    /// The extended attributes `baseline` recorded, read from the store;
    /// `None` when it recorded none.
    pub fn xattrs(&self, baseline: &Baseline) -> Result<Option<Xattrs>, BaselineError> {
        let Some(sha256) = &baseline.xattrs_sha256 else {
            return Ok(None);
        };
        let state_dir = self.root.parent().unwrap_or(Path::new("/"));
        load_xattrs(state_dir, sha256).map(Some)
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
        let xattrs = self.read_xattrs(path);
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
                xattrs: xattrs.as_ref(),
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
        let xattrs_sha256 = match new.xattrs {
            Some(x) => {
                let digest = x.digest();
                self.write_object(&digest, &x.encode())?;
                Some(digest)
            }
            None => None,
        };
        let _guard = self.lock()?;
        let baseline = Baseline {
            sha256: new.sha256.to_string(),
            mode: new.state.mode,
            uid: new.state.uid,
            gid: new.state.gid,
            size: new.content.len() as u64,
            xattrs_sha256,
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
                self.drop_objects(old);
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
            self.drop_objects(&old);
        }
        baseline
    }

    /// Removes the objects of `old` no version needs any more.
    fn drop_objects(&self, old: &Baseline) {
        for sha256 in old.objects() {
            if !self.references(sha256) {
                let _ = fs::remove_file(self.root.join("objects").join(sha256));
            }
        }
    }

    fn references(&self, sha256: &str) -> bool {
        self.policies
            .values()
            .flat_map(|files| files.values())
            .any(|entry| {
                entry
                    .versions()
                    .iter()
                    .any(|b| b.objects().any(|o| o == sha256))
            })
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
#[path = "store_tests.rs"]
mod tests;
