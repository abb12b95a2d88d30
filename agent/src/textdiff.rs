//! Unified diffs of text content, cut to a number of lines: the evidence a
//! revert puts in its alert, and `reflex baseline diff`. A leaf: it imports
//! no stage.
use similar::TextDiff;

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// A unified diff, possibly cut short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    /// The diff text (`---`/`+++` headers, then hunks).
    pub text: String,
    /// Whether lines were left out past the limit.
    pub truncated: bool,
}

/// Whether `bytes` look like text: UTF-8 without NUL bytes.
pub fn is_text(bytes: &[u8]) -> bool {
    !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok()
}

/// The unified diff from `old` to `new` (labelled `old_label`, `new_label`),
/// at most `max_lines` lines of it; `None` when either side is not text.
pub fn unified(
    old: &[u8],
    new: &[u8],
    old_label: &str,
    new_label: &str,
    max_lines: usize,
) -> Option<Diff> {
    let (Ok(old), Ok(new)) = (std::str::from_utf8(old), std::str::from_utf8(new)) else {
        return None;
    };
    if old.contains('\0') || new.contains('\0') {
        return None;
    }
    let diff = TextDiff::from_lines(old, new);
    let full = diff
        .unified_diff()
        .context_radius(CONTEXT)
        .header(old_label, new_label)
        .to_string();
    let total = full.lines().count();
    if total <= max_lines {
        return Some(Diff {
            text: full,
            truncated: false,
        });
    }
    let mut text: String = full
        .lines()
        .take(max_lines)
        .flat_map(|l| [l, "\n"])
        .collect();
    text.push_str(&format!("... {} more lines\n", total - max_lines));
    Some(Diff {
        text,
        truncated: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_change_is_a_short_hunk() {
        let diff = unified(b"a\nb\nc\n", b"a\nB\nc\n", "baseline", "now", 40).unwrap();
        assert!(!diff.truncated);
        assert!(
            diff.text.starts_with("--- baseline\n+++ now\n"),
            "{}",
            diff.text
        );
        assert!(diff.text.contains("-b\n+B\n"), "{}", diff.text);
    }

    #[test]
    fn long_diffs_are_cut_and_binary_content_has_none() {
        let old: String = (0..100).map(|i| format!("{i}\n")).collect();
        let new: String = (0..100).map(|i| format!("x{i}\n")).collect();
        let diff = unified(old.as_bytes(), new.as_bytes(), "a", "b", 10).unwrap();
        assert!(diff.truncated);
        assert_eq!(diff.text.lines().count(), 11, "ten lines and a note");
        assert!(unified(b"a\0b", b"a", "a", "b", 10).is_none());
        assert!(unified(&[0xff, 0xfe], b"a", "a", "b", 10).is_none());
        assert!(is_text(b"plain\n") && !is_text(b"\0"));
    }
}
