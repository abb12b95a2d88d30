//! The Prometheus text exposition format, as the agent serves it on
//! `/metrics`: samples with their labels, and sums over a label filter.

/// A line of `/metrics` text that is not a sample, comment or blank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// One sample: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (`reflex_events_total`; `x_bucket` for a histogram's buckets).
    pub name: String,
    /// Label names and values, unescaped, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value (`NaN`, `+Inf` and `-Inf` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the sample is named `name` and carries every `(label, value)`
    /// of `labels` (it may carry others too).
    pub fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name && labels.iter().all(|&(l, v)| self.label(l) == Some(v))
    }
}

/// Every sample of one `/metrics` text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses `text`; `#` comments (HELP, TYPE) and blank lines are skipped.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let samples = text
            .lines()
            .enumerate()
            .filter(|(_, l)| {
                let l = l.trim_start();
                !l.is_empty() && !l.starts_with('#')
            })
            .map(|(i, l)| {
                parse_sample(l).map_err(|reason| ParseError {
                    line: i + 1,
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { samples })
    }

    /// The samples in the order of the text.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The sum of the samples named `name` that carry every `(label, value)`
    /// of `labels`; 0 when none does.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.matches(name, labels))
            .map(|s| s.value)
            .sum()
    }

    /// The value of the first sample named `name` that carries every
    /// `(label, value)` of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.matches(name, labels))
            .map(|s| s.value)
    }
}

fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let line = line.trim_start();
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("expected a metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = parse_labels(inner, &mut labels)?;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a space before the value");
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("missing value")?;
    let value = value.parse::<f64>().map_err(|_| "value is not a number")?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| "timestamp is not an integer")?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the value");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}` into `labels`; returns the text after the `}`.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, &'static str> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated labels")?;
        let name = &rest[..end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err("expected a label name");
        }
        rest = rest[end..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or("expected = after a label name")?;
        rest = rest.trim_start();
        rest = rest
            .strip_prefix('"')
            .ok_or("expected a quoted label value")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let close = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("unterminated label value")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    _ => return Err("unknown escape in a label value"),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = rest[close + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP reflex_events_total Events decoded.
# TYPE reflex_events_total counter
reflex_events_total{family="file",kind="file"} 1200
reflex_events_total{family="process",kind="exec"} 21
reflex_events_total{family="process",kind="exit"} 20

# TYPE reflex_events_lost_total counter
reflex_events_lost_total{family="file",place="kernel",reason="ringbuf_full"} 7
reflex_events_lost_total{family="process",place="kernel",reason="ringbuf_full"} 2
reflex_events_lost_total{family="unknown",place="decode",reason="short"} 1
reflex_policies_loaded 3
reflex_action_latency_seconds_bucket{action="revert",le="+Inf"} 4
process_start_time_seconds 1.7e9
"#;

    #[test]
    fn sums_samples_over_a_label_filter() {
        let m = Metrics::parse(TEXT).expect("parses");
        assert_eq!(m.samples().len(), 9);
        assert_eq!(m.sum("reflex_events_total", &[]), 1241.0);
        assert_eq!(m.sum("reflex_events_total", &[("family", "file")]), 1200.0);
        assert_eq!(m.sum("reflex_events_lost_total", &[]), 10.0);
        assert_eq!(
            m.sum(
                "reflex_events_lost_total",
                &[("place", "kernel"), ("family", "file")]
            ),
            7.0
        );
        assert_eq!(
            m.sum("reflex_events_lost_total", &[("place", "decode")]),
            1.0
        );
    }

    #[test]
    fn absent_series_sum_to_zero_and_get_nothing() {
        let m = Metrics::parse(TEXT).expect("parses");
        assert_eq!(m.sum("reflex_alerts_dropped_total", &[]), 0.0);
        assert_eq!(m.sum("reflex_events_total", &[("family", "connect")]), 0.0);
        assert_eq!(m.get("reflex_events_total", &[("kind", "block")]), None);
        // A name is matched whole, not as a prefix.
        assert_eq!(m.sum("reflex_events", &[]), 0.0);
        assert_eq!(m.get("reflex_policies_loaded", &[]), Some(3.0));
        assert_eq!(m.get("process_start_time_seconds", &[]), Some(1.7e9));
    }

    #[test]
    fn label_values_are_unescaped_and_may_hold_separators() {
        let m = Metrics::parse(
            "x{path=\"/a b/c,d}\",q=\"say \\\"hi\\\"\",nl=\"1\\n2\",bs=\"c:\\\\\",} 2 1700000000000\n",
        )
        .expect("parses");
        let s = &m.samples()[0];
        assert_eq!(s.label("path"), Some("/a b/c,d}"));
        assert_eq!(s.label("q"), Some("say \"hi\""));
        assert_eq!(s.label("nl"), Some("1\n2"));
        assert_eq!(s.label("bs"), Some("c:\\"));
        assert_eq!(s.value, 2.0);
        assert!(s.matches("x", &[("path", "/a b/c,d}"), ("nl", "1\n2")]));
    }

    #[test]
    fn special_values_parse() {
        let m = Metrics::parse("a +Inf\nb -Inf\nc NaN\nd{} 0.5\n").expect("parses");
        assert_eq!(m.get("a", &[]), Some(f64::INFINITY));
        assert_eq!(m.get("b", &[]), Some(f64::NEG_INFINITY));
        assert!(m.get("c", &[]).is_some_and(f64::is_nan));
        assert_eq!(m.get("d", &[]), Some(0.5));
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line_number() {
        for (text, reason) in [
            ("ok 1\nbroken\n", "expected a space before the value"),
            ("ok 1\nx{a=\"1\n", "unterminated label value"),
            ("ok 1\nx{a=\"1\"\n", "expected , or } after a label"),
            ("ok 1\nx{a=1} 2\n", "expected a quoted label value"),
            (
                "ok 1\nx{a=\"1\" b=\"2\"} 2\n",
                "expected , or } after a label",
            ),
            ("ok 1\nx{a=\"\\t\"} 2\n", "unknown escape in a label value"),
            ("ok 1\nx one\n", "value is not a number"),
            ("ok 1\nx 1 soon\n", "timestamp is not an integer"),
            ("ok 1\nx 1 2 3\n", "unexpected text after the value"),
            ("ok 1\n{a=\"1\"} 2\n", "expected a metric name"),
            ("ok 1\nx \n", "missing value"),
        ] {
            assert_eq!(
                Metrics::parse(text),
                Err(ParseError { line: 2, reason }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn an_empty_text_has_no_samples() {
        assert_eq!(Metrics::parse("").expect("parses").samples(), &[]);
        assert_eq!(
            Metrics::parse("# only a comment\n\n")
                .expect("parses")
                .samples()
                .len(),
            0
        );
    }
}
