//! Policy sets on the bus: one key-value bucket, one key per policy file
//! (`KEY_PREFIX` + file name) and a manifest key (`KEY_PREFIX` +
//! `REVISION`) written last, naming every file with its digest. An agent
//! takes a revision only when every file it names is there with that
//! digest, so a push that is half written is never half loaded; and it
//! loads the whole set with the same rule as a directory: all valid or
//! nothing. Errors name the key: `KEY:line:column`.
use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::policy::{
    self, PolicySet,
    checked::Checked,
    load::{PolicyError, SourcePolicy},
};

/// Default bucket of policy sets.
pub const DEFAULT_BUCKET: &str = "reflex-policies";

/// Default bucket agents report their revision in (a key per host).
pub const DEFAULT_STATUS_BUCKET: &str = "reflex-status";

/// Name of the manifest key after the prefix.
pub const MANIFEST: &str = "REVISION";

/// The manifest of one revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The revision's id: a digest of its keys and their contents.
    pub revision: String,
    /// Key → SHA-256 of its content (hex).
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// The manifest of `files` (key, content).
    pub fn of(files: &[(String, String)]) -> Self {
        let files: BTreeMap<String, String> = files
            .iter()
            .map(|(k, text)| (k.clone(), digest(text.as_bytes())))
            .collect();
        let mut all = Sha256::new();
        for (key, sum) in &files {
            all.update(key.as_bytes());
            all.update([0]);
            all.update(sum.as_bytes());
            all.update([0]);
        }
        let revision = hex(&all.finalize()[..6]);
        Self { revision, files }
    }
}

/// A revision read whole from the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// Its id.
    pub revision: String,
    /// Key and content of each file.
    pub files: Vec<(String, String)>,
}

/// Where revisions from the bus arrive: the latest complete one, if any.
pub type Revisions = tokio::sync::watch::Receiver<Option<std::sync::Arc<Remote>>>;

/// SHA-256 of `bytes`, hex.
pub fn digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `key` is a valid key-value key.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c))
}

/// A loaded set with what the bus contributed.
#[derive(Debug)]
pub struct Combined {
    /// The set.
    pub set: PolicySet,
    /// Policies of the bus a local file of the same name replaced.
    pub shadowed: Vec<String>,
}

/// Loads `dir` and `remote` as one set: local files win on name clashes
/// (the bus's policy of that name is left out and named in `shadowed`);
/// any error anywhere fails the whole set.
pub fn load_combined(dir: &Path, remote: Option<&Remote>) -> Result<Combined, Vec<PolicyError>> {
    let (mut sources, mut errors) = policy::load::load_paths(&[dir.to_owned()]);
    let mut shadowed = Vec::new();
    if let Some(remote) = remote {
        let local: Vec<String> = sources.iter().filter_map(name).collect();
        for (key, text) in &remote.files {
            let (parsed, found) = policy::load::parse_source(Path::new(key), text);
            errors.extend(found);
            for source in parsed {
                match name(&source) {
                    Some(n) if local.contains(&n) => shadowed.push(n),
                    _ => sources.push(source),
                }
            }
        }
    }
    let policies = policy::compile::compile_all(sources, &mut errors);
    if errors.is_empty() {
        Ok(Combined {
            set: PolicySet::new(policies),
            shadowed,
        })
    } else {
        Err(errors)
    }
}

fn name(source: &SourcePolicy) -> Option<String> {
    match &source.spec.name {
        Checked::Valid(n) => Some(n.clone()),
        Checked::Invalid => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: from-bus\non:\n  exec: { paths: [/usr/bin/nc] }\ndo: [alert]\n";

    #[test]
    fn the_revision_follows_the_content() {
        let a = Manifest::of(&[("k.yaml".into(), "x".into())]);
        let b = Manifest::of(&[("k.yaml".into(), "y".into())]);
        assert_ne!(a.revision, b.revision);
        assert_eq!(a, Manifest::of(&[("k.yaml".into(), "x".into())]));
        assert_eq!(a.files["k.yaml"], digest(b"x"));
    }

    #[test]
    fn errors_name_the_key_and_local_files_win() {
        let dir = tempfile::tempdir().unwrap();
        let bad = Remote {
            revision: "r".into(),
            files: vec![(
                "web.bad.yaml".into(),
                "name: x\non: { nope: {} }\ndo: [alert]\n".into(),
            )],
        };
        let errors = load_combined(dir.path(), Some(&bad)).unwrap_err();
        assert!(
            errors[0].to_string().starts_with("web.bad.yaml:"),
            "{}",
            errors[0]
        );

        let local = dir.path().join("local.yaml");
        std::fs::write(&local, GOOD).unwrap();
        let mut perms = std::fs::metadata(&local).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        std::fs::set_permissions(&local, perms).unwrap();
        let both = Remote {
            revision: "r".into(),
            files: vec![
                ("a.yaml".into(), GOOD.into()),
                ("b.yaml".into(), GOOD.replace("from-bus", "other")),
            ],
        };
        let combined = load_combined(dir.path(), Some(&both)).unwrap();
        assert_eq!(combined.shadowed, ["from-bus"]);
        assert_eq!(combined.set.len(), 2);
    }

    #[test]
    fn keys_are_checked() {
        assert!(valid_key("web.ssh.yaml"));
        assert!(!valid_key("a b.yaml") && !valid_key("") && !valid_key(".x"));
    }
}
