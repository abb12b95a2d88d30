//! Reading policy files: permissions, YAML documents, every error located.
use std::{
    fmt, fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::Deserialize as _;

use super::{
    checked::{self, Position, split_location},
    spec::PolicySpec,
};

/// One problem in a policy file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// File the problem is in.
    pub file: PathBuf,
    /// Line and column, when known.
    pub position: Option<Position>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{}:{}: {}", self.file.display(), p, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for PolicyError {}

/// A parsed policy document and where it came from.
#[derive(Debug)]
pub struct SourcePolicy {
    /// The parsed document.
    pub spec: PolicySpec,
    /// Its file.
    pub file: PathBuf,
    /// Finds text inside the document, for errors found after parsing.
    pub locator: Locator,
}

/// Finds where a piece of text stands in one document of a file.
#[derive(Clone, Debug)]
pub struct Locator {
    text: String,
    first_line: usize,
}

impl Locator {
    /// Position of the document's first line.
    pub fn start(&self) -> Position {
        Position {
            line: self.first_line,
            column: 1,
        }
    }

    /// Position of the first `needle` after the first `anchor` (or the
    /// document start when either is absent).
    pub fn find(&self, anchor: Option<&str>, needle: &str) -> Position {
        let from = anchor
            .and_then(|a| self.text.find(a).map(|i| i + a.len()))
            .unwrap_or(0);
        let Some(offset) = self.text[from..].find(needle).map(|i| i + from) else {
            return anchor
                .and_then(|a| self.text.find(a))
                .map(|i| self.position_of(i))
                .unwrap_or_else(|| self.start());
        };
        self.position_of(offset)
    }

    fn position_of(&self, offset: usize) -> Position {
        let before = &self.text[..offset];
        let line = before.matches('\n').count();
        let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        Position {
            line: self.first_line + line,
            column,
        }
    }
}

/// Parses every policy document in `text` (documents separated by `---`
/// lines). Returns the documents that parsed and every error found.
pub fn parse_source(file: &Path, text: &str) -> (Vec<SourcePolicy>, Vec<PolicyError>) {
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for (first_line, doc) in split_documents(text) {
        if doc
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let shift = |p: Position| Position {
            line: p.line + first_line - 1,
            column: p.column,
        };
        let (parsed, recorded) = checked::collect(|| {
            let de = serde_yaml::Deserializer::from_str(doc);
            PolicySpec::deserialize(de)
        });
        for text in recorded {
            let (message, position) = split_location(&text);
            errors.push(PolicyError {
                file: file.to_owned(),
                position: position.map(shift),
                message,
            });
        }
        match parsed {
            Ok(spec) => policies.push(SourcePolicy {
                spec,
                file: file.to_owned(),
                locator: Locator {
                    text: doc.to_string(),
                    first_line,
                },
            }),
            Err(err) => {
                let (message, _) = split_location(&err.to_string());
                let message = strip_inline_location(&message);
                let position = err.location().map(|l| {
                    shift(Position {
                        line: l.line(),
                        column: l.column(),
                    })
                });
                let message = if message.starts_with("invalid type") && position.is_none() {
                    format!("{message}; a policy is a mapping with `name`, `on` and `do`")
                } else {
                    message
                };
                errors.push(PolicyError {
                    file: file.to_owned(),
                    position,
                    message,
                });
            }
        }
    }
    (policies, errors)
}

/// Removes a " at line L column C" that libyaml puts inside its messages.
fn strip_inline_location(message: &str) -> String {
    if let Some(start) = message.find(" at line ") {
        let rest = &message[start + " at line ".len()..];
        let end = rest
            .find(" column ")
            .map(|c| c + " column ".len())
            .map(|c| {
                c + rest[c..]
                    .find(|ch: char| !ch.is_ascii_digit())
                    .unwrap_or(rest.len() - c)
            });
        if let Some(end) = end {
            return format!("{}{}", &message[..start], &rest[end..]);
        }
    }
    message.to_string()
}

/// Splits a YAML stream at `---` lines; returns (first line number, text).
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            if offset > start {
                docs.push((start_line, &text[start..offset]));
            }
            start = offset + line.len();
            start_line = index + 2;
        }
        offset += line.len();
    }
    if text.len() > start {
        docs.push((start_line, &text[start..]));
    }
    docs
}

/// Policy files in `dir`: `*.yaml` and `*.yml`, sorted by name.
pub fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = fs::read_dir(dir).map_err(|e| PolicyError {
        file: dir.to_owned(),
        position: None,
        message: format!("cannot read policy directory: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Refuses a policy file another user could have written: it must belong to
/// root (or to whoever runs this check) and not be writable by group or others.
pub fn check_permissions(file: &Path) -> Result<(), PolicyError> {
    let error = |message: String| PolicyError {
        file: file.to_owned(),
        position: None,
        message,
    };
    let meta = fs::metadata(file).map_err(|e| error(format!("cannot stat: {e}")))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(error(format!(
            "owned by uid {}; policy files decide what gets killed and must be owned by root",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(error(format!(
            "writable by group or others (mode {:o}); run `chmod go-w` on it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Reads, checks and parses one file.
pub fn load_file(file: &Path) -> (Vec<SourcePolicy>, Vec<PolicyError>) {
    if let Err(err) = check_permissions(file) {
        return (Vec::new(), vec![err]);
    }
    match fs::read_to_string(file) {
        Ok(text) => parse_source(file, &text),
        Err(e) => (
            Vec::new(),
            vec![PolicyError {
                file: file.to_owned(),
                position: None,
                message: format!("cannot read: {e}"),
            }],
        ),
    }
}

/// Reads files and directories (their `*.yaml`/`*.yml` files).
pub fn load_paths(paths: &[PathBuf]) -> (Vec<SourcePolicy>, Vec<PolicyError>) {
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let files = if path.is_dir() {
            match policy_files(path) {
                Ok(files) => files,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            }
        } else {
            vec![path.clone()]
        };
        for file in files {
            let (p, e) = load_file(&file);
            policies.extend(p);
            errors.extend(e);
        }
    }
    (policies, errors)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn documents_split_with_line_numbers() {
        let docs = split_documents("a: 1\n---\nb: 2\nc: 3\n--- \nd: 4");
        assert_eq!(docs, [(1, "a: 1\n"), (3, "b: 2\nc: 3\n"), (6, "d: 4")]);
    }

    #[test]
    fn locator_finds_text_after_an_anchor() {
        let loc = Locator {
            text: "name: a\ndo:\n  - revert\n".into(),
            first_line: 10,
        };
        assert_eq!(
            loc.find(Some("do:"), "revert"),
            Position {
                line: 12,
                column: 5
            }
        );
    }

    #[test]
    fn group_writable_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        fs::write(&file, "name: x\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o664)).unwrap();
        let err = check_permissions(&file).unwrap_err();
        assert!(err.message.contains("writable by group or others"), "{err}");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_permissions(&file).is_ok());
    }
}
