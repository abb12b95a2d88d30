//! Per-family indexes, so evaluating an event costs about the same however
//! many policies cannot match it.
use std::collections::HashMap;

use globset::GlobMatcher;

use super::{
    model::{Policy, Trigger},
    value::PathGlob,
};

/// Which policies a path can match: exact paths by hash; globs by the
/// directory their literal part ends in (a path is tested only against the
/// globs rooted in one of its ancestors); and the policies that match every
/// path. The cost follows the depth of the path and the globs near it, not
/// the number of policies.
#[derive(Debug, Default)]
pub struct PathIndex {
    literal: HashMap<String, Vec<usize>>,
    by_dir: HashMap<String, Vec<(GlobMatcher, usize)>>,
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
        for (i, policy) in policies.iter().enumerate() {
            let Some(paths) = paths_of(&policy.trigger) else {
                continue;
            };
            if paths.is_empty() {
                index.any.push(i);
            }
            for path in paths {
                if path.is_literal() {
                    index
                        .literal
                        .entry(path.as_str().to_string())
                        .or_default()
                        .push(i);
                } else {
                    index
                        .by_dir
                        .entry(path.literal_dir().to_string())
                        .or_default()
                        .push((path.matcher(), i));
                }
            }
        }
        index
    }

    /// Positions of the policies `path` can match, ascending, no repeats.
    pub fn candidates(&self, path: &str) -> Vec<usize> {
        let mut out = self.any.clone();
        if let Some(hits) = self.literal.get(path) {
            out.extend(hits);
        }
        if !self.by_dir.is_empty() {
            for (end, _) in path.match_indices('/') {
                let dir = if end == 0 { "/" } else { &path[..end] };
                if let Some(globs) = self.by_dir.get(dir) {
                    out.extend(
                        globs
                            .iter()
                            .filter(|(m, _)| m.is_match(path))
                            .map(|(_, i)| *i),
                    );
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::value::{PathGlob, Scalar as _};

    fn literal_dir(glob: &str) -> String {
        PathGlob::parse(glob).unwrap().literal_dir().to_string()
    }

    #[test]
    fn literal_dirs() {
        assert_eq!(literal_dir("/opt/app/bin/*"), "/opt/app/bin");
        assert_eq!(literal_dir("/etc/nginx/**/*.conf"), "/etc/nginx");
        assert_eq!(literal_dir("/*/bin/nc"), "/");
        assert_eq!(literal_dir("/usr/bin/nc*"), "/usr/bin");
    }
}
