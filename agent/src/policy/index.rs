//! Per-family indexes, so evaluating an event costs about the same however
//! many policies cannot match it.
use std::collections::HashMap;

use globset::{GlobSet, GlobSetBuilder};

use super::{
    model::{Policy, Trigger},
    value::{PathGlob, compile_glob},
};

/// Which `exec` policies a path can match: exact paths by hash, all globs in
/// one automaton, and the policies that match every exec.
#[derive(Debug, Default)]
pub struct PathIndex {
    literal: HashMap<String, Vec<usize>>,
    globs: Option<GlobSet>,
    glob_owner: Vec<usize>,
    any: Vec<usize>,
}

impl PathIndex {
    /// Indexes the `exec` policies of `policies` by position.
    pub fn exec(policies: &[Policy]) -> Self {
        Self::build(policies, |t| match t {
            Trigger::Exec { paths } => Some(paths),
            _ => None,
        })
    }

    /// Indexes the `file` policies of `policies` by position.
    pub fn file(policies: &[Policy]) -> Self {
        Self::build(policies, |t| match t {
            Trigger::File { paths, .. } => Some(paths),
            _ => None,
        })
    }

    fn build(policies: &[Policy], paths_of: impl Fn(&Trigger) -> Option<&Vec<PathGlob>>) -> Self {
        let mut index = Self::default();
        let mut builder = GlobSetBuilder::new();
        for (i, policy) in policies.iter().enumerate() {
            let Some(paths) = paths_of(&policy.trigger) else {
                continue;
            };
            if paths.is_empty() {
                index.any.push(i);
            }
            for path in paths {
                if path.is_literal() {
                    index.literal.entry(path.0.clone()).or_default().push(i);
                } else {
                    builder.add(compile_glob(&path.0).expect("validated glob"));
                    index.glob_owner.push(i);
                }
            }
        }
        if !index.glob_owner.is_empty() {
            index.globs = builder.build().ok();
        }
        index
    }

    /// Positions of the policies `path` can match, ascending, no repeats.
    pub fn candidates(&self, path: &str) -> Vec<usize> {
        let mut out = self.any.clone();
        if let Some(hits) = self.literal.get(path) {
            out.extend(hits);
        }
        if let Some(globs) = &self.globs {
            out.extend(globs.matches(path).into_iter().map(|g| self.glob_owner[g]));
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}
