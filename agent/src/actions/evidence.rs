//! Evidence of what a revert put back: the rejected content, kept under
//! `STATE/evidence/` by its hash (bounded in size per file and in number of
//! files, the oldest going first), and a short unified diff from the
//! baseline for the alert, so an operator sees what was written without
//! logging in. `evidence: hash-only` keeps neither, only the hash.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use prometheus::IntCounterVec;
use serde::Deserialize;

use crate::{fsio, policy::accept::EvidenceMode, sinks::alert::Evidence, textdiff};

/// `evidence:` in the agent's configuration, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Largest rejected file kept, in bytes (default 1 MiB).
    pub max_bytes: Option<u64>,
    /// Rejected files kept at most (default 100).
    pub max_files: Option<usize>,
    /// Lines of diff an alert carries at most (default 40).
    pub diff_lines: Option<usize>,
}

/// The bounds in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvidenceSettings {
    /// Largest rejected file kept (and diffed), in bytes.
    pub max_bytes: u64,
    /// Rejected files kept at most.
    pub max_files: usize,
    /// Lines of diff an alert carries at most.
    pub diff_lines: usize,
}

impl Default for EvidenceSettings {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            max_files: 100,
            diff_lines: 40,
        }
    }
}

impl EvidenceSettings {
    /// The configured bounds over the defaults.
    pub fn from_config(config: &EvidenceConfig) -> Self {
        let d = Self::default();
        Self {
            max_bytes: config.max_bytes.unwrap_or(d.max_bytes),
            max_files: config.max_files.unwrap_or(d.max_files),
            diff_lines: config.diff_lines.unwrap_or(d.diff_lines),
        }
    }
}

/// What [`EvidenceStore::capture`] read of a file about to be replaced.
pub struct Captured {
    evidence: Evidence,
    /// Its content, when there is more to do with it.
    content: Option<Vec<u8>>,
}

impl Captured {
    fn done(evidence: Evidence) -> Self {
        Self {
            evidence,
            content: None,
        }
    }
}

/// Where rejected content is kept.
pub struct EvidenceStore {
    dir: PathBuf,
    settings: EvidenceSettings,
    dropped: Option<IntCounterVec>,
}

impl EvidenceStore {
    /// Keeps evidence in `STATE_DIR/evidence/` within `settings`.
    pub fn new(state_dir: &Path, settings: EvidenceSettings) -> Self {
        Self {
            dir: state_dir.join("evidence"),
            settings,
            dropped: None,
        }
    }

    /// Counts what is not kept in `reflex_evidence_dropped_total{reason}`.
    pub fn with_metrics(mut self, dropped: IntCounterVec) -> Self {
        self.dropped = Some(dropped);
        self
    }

    fn drop_counted(&self, reason: &str) {
        if let Some(counter) = &self.dropped {
            counter.with_label_values(&[reason]).inc();
        }
    }

    /// What is at `path` now, about to be replaced by the baseline whose
    /// content is the file `baseline`, or removed (`None`: the diff is
    /// from nothing).
    pub fn keep(&self, path: &Path, baseline: Option<&Path>, mode: EvidenceMode) -> Evidence {
        let captured = self.capture(path, mode);
        self.finish(captured, baseline, mode)
    }

    /// The part of [`EvidenceStore::keep`] that must come before the file
    /// is replaced: its state and content, read. The rest (the copy kept,
    /// the diff) can follow the restore, off the path to it.
    pub fn capture(&self, path: &Path, mode: EvidenceMode) -> Captured {
        let mut evidence = Evidence {
            path: path.display().to_string(),
            ..Evidence::default()
        };
        let state = match fsio::state(path) {
            Ok(Some(state)) => state,
            _ => {
                evidence.note = Some("no regular file at the path".into());
                return Captured::done(evidence);
            }
        };
        evidence.size = Some(state.size);
        if state.size > self.settings.max_bytes {
            // Past what any baseline holds, not even hashed: reading
            // gigabytes a user wrote would hold the revert past its deadline.
            let hashed = state.size <= crate::settle::file::baseline::MAX_BASELINE_BYTES;
            evidence.sha256 = hashed.then(|| fsio::content_hash(path).ok()).flatten();
            evidence.note = Some(match hashed {
                true => format!(
                    "{} bytes, more than evidence.max_bytes ({}): only its hash is kept",
                    state.size, self.settings.max_bytes
                ),
                false => format!("{} bytes: too large to keep or hash", state.size),
            });
            if mode == EvidenceMode::Diff {
                self.drop_counted("too_large");
            }
            return Captured::done(evidence);
        }
        let Ok(content) = fsio::read_content(path, self.settings.max_bytes) else {
            evidence.note = Some("the file could not be read".into());
            return Captured::done(evidence);
        };
        evidence.sha256 = fsio::hash_reader(content.as_slice()).ok();
        if mode == EvidenceMode::HashOnly {
            evidence.note = Some("evidence: hash-only".into());
            return Captured::done(evidence);
        }
        Captured {
            evidence,
            content: Some(content),
        }
    }

    /// Keeps the content `captured` read (as `mode` says) and adds its diff
    /// against the file `baseline`.
    pub fn finish(
        &self,
        captured: Captured,
        baseline: Option<&Path>,
        mode: EvidenceMode,
    ) -> Evidence {
        let Captured {
            mut evidence,
            content,
        } = captured;
        let Some(content) = content else {
            return evidence;
        };
        if mode == EvidenceMode::HashOnly {
            return evidence;
        }
        let path = evidence.path.clone();
        if let Some(sha256) = &evidence.sha256 {
            match self.store(sha256, &content) {
                Ok(kept) => evidence.kept = Some(kept.display().to_string()),
                Err(err) => {
                    self.drop_counted("write");
                    tracing::warn!(%err, path, "keeping the rejected content");
                }
            }
        }
        let old = match baseline {
            Some(baseline) => fsio::read_content(baseline, self.settings.max_bytes).ok(),
            None => Some(Vec::new()),
        };
        match old.and_then(|old| {
            textdiff::unified(
                &old,
                &content,
                "baseline",
                "rejected",
                self.settings.diff_lines,
            )
        }) {
            Some(diff) => {
                evidence.diff = Some(diff.text);
                evidence.diff_truncated = diff.truncated;
            }
            None => evidence.note = Some("not text (or the baseline is too large): no diff".into()),
        }
        evidence
    }

    /// Writes `content` as `sha256` (or marks an existing copy as new) and
    /// removes the oldest copies past the bound.
    fn store(&self, sha256: &str, content: &[u8]) -> std::io::Result<PathBuf> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let path = self.dir.join(sha256);
        if path.exists() {
            fs::File::options()
                .append(true)
                .open(&path)?
                .set_modified(std::time::SystemTime::now())?;
        } else {
            let temp = self.dir.join(format!(".{sha256}.tmp"));
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(content)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
        }
        self.prune();
        Ok(path)
    }

    fn prune(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut kept: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if kept.len() <= self.settings.max_files {
            return;
        }
        kept.sort();
        let excess = kept.len() - self.settings.max_files;
        for (_, path) in kept.into_iter().take(excess) {
            if fs::remove_file(&path).is_ok() {
                self.drop_counted("pruned");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, max_files: usize) -> EvidenceStore {
        EvidenceStore::new(
            dir,
            EvidenceSettings {
                max_bytes: 64,
                max_files,
                diff_lines: 10,
            },
        )
    }

    #[test]
    fn keeps_the_content_and_diffs_it_against_the_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let (file, base) = (dir.path().join("app.conf"), dir.path().join("base"));
        fs::write(&base, "port 80\n").unwrap();
        fs::write(&file, "port 31337\n").unwrap();
        let e = store(dir.path(), 5).keep(&file, Some(&base), EvidenceMode::Diff);
        assert!(e.diff.as_deref().unwrap().contains("+port 31337"), "{e:?}");
        assert_eq!(fs::read(e.kept.unwrap()).unwrap(), b"port 31337\n");
        let secret = store(dir.path(), 5).keep(&file, Some(&base), EvidenceMode::HashOnly);
        assert!(secret.diff.is_none() && secret.kept.is_none() && secret.sha256.is_some());
    }

    #[test]
    fn a_created_file_is_kept_and_diffed_from_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("evil.conf");
        fs::write(&file, "backdoor=1\n").unwrap();
        let e = store(dir.path(), 5).keep(&file, None, EvidenceMode::Diff);
        assert!(e.diff.as_deref().unwrap().contains("+backdoor=1"), "{e:?}");
        assert_eq!(fs::read(e.kept.unwrap()).unwrap(), b"backdoor=1\n");
    }

    #[test]
    fn large_files_keep_only_a_hash_and_old_copies_go() {
        let dir = tempfile::tempdir().unwrap();
        let (file, base) = (dir.path().join("big"), dir.path().join("base"));
        fs::write(&base, "x").unwrap();
        fs::write(&file, vec![b'a'; 100]).unwrap();
        let dropped = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["reason"]).unwrap();
        let s = store(dir.path(), 2).with_metrics(dropped.clone());
        let e = s.keep(&file, Some(&base), EvidenceMode::Diff);
        assert!(e.kept.is_none() && e.sha256.is_some());
        assert_eq!(dropped.with_label_values(&["too_large"]).get(), 1);
        for i in 0..4 {
            fs::write(&file, format!("v{i}\n")).unwrap();
            s.keep(&file, Some(&base), EvidenceMode::Diff);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            fs::read_dir(dir.path().join("evidence")).unwrap().count(),
            2
        );
        assert_eq!(dropped.with_label_values(&["pruned"]).get(), 2);
    }
}
