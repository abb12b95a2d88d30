//! Which paths each policy has taken into use: the globs (and literal
//! paths) a `revert` policy had recorded its baselines for, kept beside the
//! baselines in `baselines/covered/<policy>.json`.
//!
//! This is what tells a policy loaded for the first time, which records
//! every file it finds as its baseline (that is how deployments start),
//! from a policy already in force, for which a file found with no baseline
//! was created while no agent watched, by someone nobody asked: it is
//! drift, not a new baseline. A glob counts as known when it is remembered
//! here, or when the policy already keeps a baseline of a path it matches
//! (a store written before this file existed). Renaming a policy, or
//! adding a glob to it, makes that policy or glob new again.
use std::{collections::BTreeSet, fs};

use super::{
    baseline::{BaselineError, io_error},
    store::BaselineStore,
};
use crate::policy::value::PathGlob;

impl BaselineStore {
    /// The globs `policy` was last taken into use with.
    pub fn covered(&self, policy: &str) -> BTreeSet<String> {
        let path = self.root().join("covered").join(format!("{policy}.json"));
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                // Read as "nothing known": the policy's files with no
                // baseline are recorded rather than removed.
                tracing::error!(path = %path.display(), %err, "unreadable list of covered globs; ignored");
                BTreeSet::new()
            }),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Which of `globs` are known for `policy`: remembered, or matching a
    /// path the policy keeps a baseline of.
    pub fn known<'a>(&self, policy: &str, globs: &'a [PathGlob]) -> Vec<&'a PathGlob> {
        let remembered = self.covered(policy);
        globs
            .iter()
            .filter(|glob| {
                remembered.contains(glob.as_str()) || {
                    let matcher = glob.matcher();
                    self.list()
                        .any(|(p, path, _)| p == policy && matcher.is_match(path))
                }
            })
            .collect()
    }

    /// Remembers that `policy` is in force with `globs` (replacing what it
    /// had: a glob dropped and added again later is new again).
    pub fn remember(&mut self, policy: &str, globs: &[PathGlob]) -> Result<(), BaselineError> {
        let wanted: BTreeSet<String> = globs.iter().map(|g| g.as_str().to_string()).collect();
        if self.covered(policy) == wanted {
            return Ok(());
        }
        let _guard = self.lock()?;
        let dir = self.root().join("covered");
        fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        let path = dir.join(format!("{policy}.json"));
        let temp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&wanted).expect("globs serialise");
        fs::write(&temp, text)
            .and_then(|()| fs::File::open(&temp)?.sync_all())
            .and_then(|()| fs::rename(&temp, &path))
            .map_err(io_error("writing the covered globs", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> PathGlob {
        <PathGlob as crate::policy::value::Scalar>::parse(text).unwrap()
    }

    #[test]
    fn a_glob_is_known_once_remembered_or_once_it_has_baselines() {
        let state = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let a = files.path().join("a.conf");
        fs::write(&a, "a\n").unwrap();
        let confs = glob(&format!("{}/*.conf", files.path().display()));
        let inis = glob(&format!("{}/*.ini", files.path().display()));
        let globs = [confs.clone(), inis.clone()];

        let mut store = BaselineStore::open(state.path()).unwrap();
        assert!(store.known("p", &globs).is_empty(), "a new policy");
        store.record("p", &a, None).unwrap();
        assert_eq!(
            store.known("p", &globs),
            [&confs],
            "an older store: by its baselines"
        );
        assert!(store.known("q", &globs).is_empty(), "per policy");

        store.remember("p", &globs).unwrap();
        let reopened = BaselineStore::open(state.path()).unwrap();
        assert_eq!(
            reopened.known("p", &globs),
            [&confs, &inis],
            "an empty glob too"
        );

        store.remember("p", std::slice::from_ref(&confs)).unwrap();
        assert_eq!(
            store.known("p", std::slice::from_ref(&inis)),
            Vec::<&PathGlob>::new()
        );
    }
}
