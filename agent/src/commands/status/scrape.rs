//! Reading a running agent from outside: its `/metrics` over plain HTTP
//! and the tail of its alert log.
use std::{
    collections::BTreeMap,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

/// What could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The agent does not answer on its metrics address.
    #[error("no agent answers on {addr}: {source}")]
    Connect {
        /// The metrics address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It answered something other than a 200 with a body.
    #[error("{addr} answered {status:?} to GET /metrics")]
    Http {
        /// The metrics address.
        addr: SocketAddr,
        /// The status line.
        status: String,
    },
    /// The alert log exists and could not be read.
    #[error("reading {path}: {source}")]
    AlertLog {
        /// `alerts.jsonl`.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How long one read of `/metrics` may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of `/metrics` read (the agent's is tens of KiB).
const MAX_BODY: u64 = 16 << 20;
/// The most of the alert log's end read for the last decisions: enough
/// for a few lines at the largest line bound.
const TAIL_BYTES: u64 = 256 << 10;

/// One sample of the exposition text.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Every sample of one read of `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    /// Parses the Prometheus text format; lines that do not parse are skipped.
    pub fn parse(text: &str) -> Self {
        Self(text.lines().filter_map(parse_line).collect())
    }

    /// The samples named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| s.name == name)
    }

    /// Sum of the samples named `name` whose labels hold every `(key, value)`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.named(name)
            .filter(|s| with.iter().all(|(k, v)| s.label(k) == *v))
            .map(|s| s.value)
            .sum()
    }

    /// Sums of `name` per value of `label`.
    pub fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.named(name) {
            *out.entry(s.label(label).to_string()).or_insert(0.0) += s.value;
        }
        out
    }
}

impl Sample {
    /// The value of label `key`, empty when absent.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` into a map, with the format's escapes undone.
fn parse_labels(mut rest: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// `GET /metrics` on `addr`.
pub fn metrics(addr: SocketAddr) -> Result<Samples, ScrapeError> {
    let connect = |source| ScrapeError::Connect { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(connect)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(connect)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(connect)?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: reflex\r\n\r\n")
        .map_err(connect)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_BODY)
        .read_to_end(&mut raw)
        .map_err(connect)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(ScrapeError::Http {
            addr,
            status: status.to_string(),
        });
    }
    Ok(Samples::parse(body))
}

/// The last `n` alerts of `STATE/alerts.jsonl`, oldest first, as loose
/// JSON (no log yet: none).
pub fn last_alerts(state_dir: &Path, n: usize) -> Result<Vec<serde_json::Value>, ScrapeError> {
    let path = state_dir.join("alerts.jsonl");
    let error = |source| ScrapeError::AlertLog {
        path: path.clone(),
        source,
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(error(e)),
    };
    let len = file.metadata().map_err(error)?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).map_err(error)?;
    let mut tail = Vec::new();
    file.take(TAIL_BYTES)
        .read_to_end(&mut tail)
        .map_err(error)?;
    let text = String::from_utf8_lossy(&tail);
    // A read that starts inside a line drops that line's end.
    let lines = text.lines().skip(usize::from(start > 0));
    let alerts: Vec<serde_json::Value> =
        lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
    Ok(alerts[alerts.len().saturating_sub(n)..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_is_read_with_labels_and_escapes() {
        let samples = Samples::parse(
            "# HELP x y\n# TYPE x counter\nreflex_events_total{family=\"exec\",kind=\"exec\"} 12\n\
             reflex_events_total{family=\"exec\",kind=\"exit\"} 3\n\
             reflex_component_up{component=\"sink/a \\\"b\\\"\"} 0\n\
             reflex_policies_loaded 4\nbucket{le=\"+Inf\"} +Inf\n",
        );
        assert_eq!(
            samples.sum("reflex_events_total", &[("family", "exec")]),
            15.0
        );
        assert_eq!(samples.by("reflex_events_total", "kind")["exit"], 3.0);
        assert_eq!(
            samples
                .named("reflex_component_up")
                .next()
                .unwrap()
                .label("component"),
            "sink/a \"b\""
        );
        assert_eq!(samples.sum("reflex_policies_loaded", &[]), 4.0);
        assert_eq!(samples.0.len(), 5);
    }

    #[test]
    fn the_last_alerts_are_read_from_the_log_end() {
        let dir = tempfile::tempdir().unwrap();
        assert!(last_alerts(dir.path(), 3).unwrap().is_empty());
        let lines: String = (0..10)
            .map(|i| format!("{{\"policy\":\"p{i}\"}}\n"))
            .collect();
        std::fs::write(dir.path().join("alerts.jsonl"), lines).unwrap();
        let last = last_alerts(dir.path(), 3).unwrap();
        let names: Vec<&str> = last.iter().map(|a| a["policy"].as_str().unwrap()).collect();
        assert_eq!(names, ["p7", "p8", "p9"]);
    }
}
