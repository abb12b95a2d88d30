//! Caps on what users control: the argument list of a process, and any JSON
//! value the agent writes out (an alert line, a hook's stdin). A leaf: it
//! imports no stage.
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Bytes of a process's argument list kept, NULs included: the kernel
/// probe's limit, so that `/proc` and exec events agree.
pub const ARGV_MAX_BYTES: usize = reflex_wire::process::ARGS_MAX;

/// Bytes of a command name kept (the kernel's is 16, a kernel thread's 64).
pub const COMM_MAX_BYTES: usize = 64;

/// Appended to a string that was cut.
const CUT_MARK: &str = "…";

/// Strings are never cut below this many bytes (a SHA-256 in hex fits).
const STRING_FLOOR: usize = 64;

/// Arrays keep at least this many items when cut.
const ITEMS_FLOOR: usize = 4;

/// Objects with more keys than this are free-form maps (labels, baselines
/// per policy), never a record's own fields, and may lose keys.
const MAP_KEYS_MAX: usize = 32;

/// Cuts `text` to at most `max` bytes on a character boundary; true if it
/// was cut.
pub fn truncate(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// Splits a NUL-separated argument block (`/proc/PID/cmdline`) read up to
/// `ARGV_MAX_BYTES + 1` bytes: at most [`ARGV_MAX_BYTES`] are kept, the
/// last argument cut where the cap falls. Returns the arguments and
/// whether any were cut.
pub fn split_argv(block: &[u8]) -> (Vec<String>, bool) {
    let truncated = block.len() > ARGV_MAX_BYTES;
    let block = &block[..block.len().min(ARGV_MAX_BYTES)];
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return (Vec::new(), truncated);
    }
    let args = block
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (args, truncated)
}

/// How [`fit`] left a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// It fitted as it was.
    Whole,
    /// Strings, arrays or maps were cut to make it fit.
    Cut,
    /// Even cut to the floor it is larger than the bound; the caller
    /// replaces it with a stub.
    Over,
}

/// Length of `value` encoded as JSON.
pub fn encoded_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// Cuts the strings, arrays and free-form maps inside `value` until its JSON
/// encoding is at most `max_bytes`. Shape is kept: a cut record still
/// reads back as a record.
pub fn fit(value: &mut Value, max_bytes: usize) -> Fit {
    if encoded_len(value) <= max_bytes {
        return Fit::Whole;
    }
    let mut keep = 1024;
    loop {
        shrink(value, keep);
        if encoded_len(value) <= max_bytes {
            return Fit::Cut;
        }
        if keep <= STRING_FLOOR {
            return Fit::Over;
        }
        keep /= 2;
    }
}

/// Strings to `keep` bytes, arrays to `keep / 16` items, maps to
/// [`MAP_KEYS_MAX`] keys.
fn shrink(value: &mut Value, keep: usize) {
    match value {
        Value::String(s) => {
            if truncate(s, keep.max(STRING_FLOOR)) {
                s.push_str(CUT_MARK);
            }
        }
        Value::Array(items) => {
            items.truncate((keep / 16).max(ITEMS_FLOOR));
            items.iter_mut().for_each(|v| shrink(v, keep));
        }
        Value::Object(map) => {
            if map.len() > MAP_KEYS_MAX {
                let extra: Vec<String> = map.keys().skip(MAP_KEYS_MAX).cloned().collect();
                for key in extra {
                    map.remove(&key);
                }
            }
            map.values_mut().for_each(|v| shrink(v, keep));
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Lets a log line that a flood would repeat (a full spool, a full disk)
/// through at most once per period, with the count held back since.
#[derive(Debug)]
pub struct LogEvery {
    period: Duration,
    /// When one last went through, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogEvery {
    /// At most one line per `period`.
    pub const fn new(period: Duration) -> Self {
        Self {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last one)` when this line may be logged.
    pub fn pass(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.period => {
                state.1 += 1;
                None
            }
            _ => {
                let held = std::mem::take(&mut state.1);
                state.0 = Some(now);
                Some(held)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn argv_is_cut_at_the_probe_limit_like_exec_events() {
        let mut block = Vec::new();
        for _ in 0..45 {
            block.extend(std::iter::repeat_n(b'a', 100));
            block.push(0);
        }
        let (args, cut) = split_argv(&block[..ARGV_MAX_BYTES + 1]);
        assert!(cut);
        let kept: usize = args.iter().map(|a| a.len() + 1).sum();
        assert!(kept <= ARGV_MAX_BYTES + 1, "{kept}");
        assert_eq!(args[0].len(), 100);
        let (args, cut) = split_argv(b"sleep\x005\x00");
        assert_eq!((args, cut), (vec!["sleep".into(), "5".into()], false));
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let mut s = "é".repeat(10);
        assert!(truncate(&mut s, 5));
        assert_eq!(s, "éé");
        assert!(!truncate(&mut s, 64));
    }

    #[test]
    fn fit_cuts_strings_and_arrays_and_keeps_the_shape() {
        let big = "x".repeat(200_000);
        let mut value = json!({
            "policy": "p",
            "event": {"process": {"argv": vec![big.clone(); 45], "exe": big}},
            "labels": (0..100).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>(),
        });
        assert_eq!(fit(&mut value, 16 << 10), Fit::Cut);
        assert!(encoded_len(&value) <= 16 << 10);
        assert_eq!(value["policy"], "p");
        assert!(value["event"]["process"]["argv"].is_array());
        assert!(
            value["event"]["process"]["exe"]
                .as_str()
                .unwrap()
                .ends_with('…')
        );
        assert_eq!(value["labels"].as_object().unwrap().len(), MAP_KEYS_MAX);

        let mut small = json!({"a": "b"});
        assert_eq!(fit(&mut small, 100), Fit::Whole);
        let mut hopeless = json!(vec!["x".repeat(100); 4]);
        assert_eq!(fit(&mut hopeless, 10), Fit::Over);
    }

    #[test]
    fn a_repeated_line_goes_through_once_per_period() {
        let gate = LogEvery::new(Duration::from_secs(3600));
        assert_eq!(gate.pass(), Some(0));
        assert_eq!(gate.pass(), None);
        assert_eq!(gate.pass(), None);
        let open = LogEvery::new(Duration::ZERO);
        assert_eq!(open.pass(), Some(0));
        assert_eq!(open.pass(), Some(0));
    }
}
