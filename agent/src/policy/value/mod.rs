//! Scalar values in policies, each validated while it is parsed so that a bad
//! one is reported at its own line and column.
use std::{fmt, marker::PhantomData, str::FromStr, time::Duration};

use ipnet::IpNet;
use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};

/// A scalar that parses from a YAML string or number.
pub trait Scalar: Sized {
    /// What the user should have written, for error messages.
    const EXPECTED: &'static str;
    /// Parses the text form.
    fn parse(text: &str) -> Result<Self, String>;
}

struct ScalarVisitor<T>(PhantomData<T>);

impl<T: Scalar> Visitor<'_> for ScalarVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::parse(v).map_err(|msg| E::custom(format!("{msg}; expected {}", T::EXPECTED)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

/// Any scalar, as text.
impl Scalar for String {
    const EXPECTED: &'static str = "text";

    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
}

/// A non-negative integer such as a user id.
impl Scalar for u32 {
    const EXPECTED: &'static str = "a whole number";

    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("bad number {text:?}"))
    }
}

/// Implements [`Scalar`] for a fieldless enum from its snake_case names.
#[macro_export]
macro_rules! scalar_enum {
    ($ty:ty, $expected:literal, { $($name:literal => $variant:expr),* $(,)? }) => {
        impl $crate::policy::value::Scalar for $ty {
            const EXPECTED: &'static str = $expected;

            fn parse(text: &str) -> Result<Self, String> {
                match text {
                    $($name => Ok($variant),)*
                    other => Err(format!("unknown value {other:?}")),
                }
            }
        }
    };
}

macro_rules! scalar_deserialize {
    ($($ty:ty),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ScalarVisitor::<$ty>(PhantomData))
            }
        }
    )*};
}

scalar_deserialize!(
    PathGlob,
    NameGlob,
    DurationValue,
    Percent,
    Cidr,
    PortRange,
    SignalValue,
    Template
);

/// An absolute path or path glob (`*` stays within one path component,
/// `**` crosses them), compiled once when it is read.
#[derive(Clone, Debug)]
pub struct PathGlob {
    text: String,
    glob: globset::Glob,
}

impl PartialEq for PathGlob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for PathGlob {}

impl Scalar for PathGlob {
    const EXPECTED: &'static str = "an absolute path or glob such as \"/usr/bin/nc*\"";

    fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path {text:?} is not absolute"));
        }
        // Events carry real paths: a `.` or `..` step could never match,
        // and a revert must name its file directly.
        if text.split('/').skip(1).any(|c| c == "." || c == "..") {
            return Err(format!(
                "path {text:?} has a `.` or `..` component; name the file by its real path"
            ));
        }
        Ok(Self {
            glob: compile_glob(text)?,
            text: text.to_string(),
        })
    }
}

impl PathGlob {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The compiled pattern.
    pub fn glob(&self) -> &globset::Glob {
        &self.glob
    }

    /// A matcher for one pattern.
    pub fn matcher(&self) -> globset::GlobMatcher {
        self.glob.compile_matcher()
    }

    /// Whether the pattern has no glob metacharacters.
    pub fn is_literal(&self) -> bool {
        !self.text.contains(['*', '?', '[', '{'])
    }

    /// How many directory levels below [`PathGlob::literal_dir`] a walk must
    /// go to see every file the pattern can match (unbounded for `**`).
    pub fn walk_depth(&self) -> usize {
        if self.text.contains("**") {
            usize::MAX
        } else {
            self.text[self.literal_dir().len()..].matches('/').count()
        }
    }

    /// The directory its literal part ends in: `/opt/app/bin` for
    /// `/opt/app/bin/*`, `/` for `/*/bin/nc`; the parent directory of a
    /// literal path.
    pub fn literal_dir(&self) -> &str {
        let text = &self.text;
        let meta = text.find(['*', '?', '[', '{']).unwrap_or(text.len());
        match text[..meta].rfind('/') {
            Some(0) | None => "/",
            Some(slash) => &text[..slash],
        }
    }
}

/// Builds one set matching any of `globs`; `None` when there are none.
pub fn glob_set<'a>(
    globs: impl IntoIterator<Item = &'a globset::Glob>,
) -> Option<globset::GlobSet> {
    let mut builder = globset::GlobSetBuilder::new();
    let mut any = false;
    for glob in globs {
        builder.add(glob.clone());
        any = true;
    }
    // Every glob compiled on its own; a set of them builds unless the
    // combined automaton exceeds the regex size limit.
    any.then(|| builder.build()).and_then(|set| {
        set.inspect_err(|err| tracing::error!(%err, "building a glob set"))
            .ok()
    })
}

/// A name or name glob (e.g. a `comm`), compiled once when it is read.
#[derive(Clone, Debug)]
pub struct NameGlob {
    text: String,
    glob: globset::Glob,
}

impl NameGlob {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The compiled pattern.
    pub fn glob(&self) -> &globset::Glob {
        &self.glob
    }
}

impl Scalar for NameGlob {
    const EXPECTED: &'static str = "a name or glob such as \"nc*\"";

    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty name".into());
        }
        Ok(Self {
            glob: compile_glob(text)?,
            text: text.to_string(),
        })
    }
}

/// Compiles a glob the way the evaluator will, so errors surface at load.
pub fn compile_glob(text: &str) -> Result<globset::Glob, String> {
    globset::GlobBuilder::new(text)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("bad glob {text:?}: {}", e.kind()))
}

/// A positive duration such as `60s`, `5m`, `1h 30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl Scalar for DurationValue {
    const EXPECTED: &'static str = "a duration such as \"500ms\", \"60s\" or \"5m\"";

    fn parse(text: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(text.trim())
            .map_err(|e| format!("bad duration {text:?} ({e})"))?;
        if d.is_zero() {
            return Err(format!("duration {text:?} is zero"));
        }
        Ok(Self(d))
    }
}

/// A percentage above 0 and at most 100, written `80%` or `80`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percent(pub f64);

impl Scalar for Percent {
    const EXPECTED: &'static str = "a percentage such as \"80%\"";

    fn parse(text: &str) -> Result<Self, String> {
        let number = text.trim().trim_end_matches('%').trim();
        let value: f64 = number
            .parse()
            .map_err(|_| format!("bad percentage {text:?}"))?;
        if !(value > 0.0 && value <= 100.0) {
            return Err(format!(
                "percentage {text:?} is not above 0 and at most 100"
            ));
        }
        Ok(Self(value))
    }
}

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `::1/128`); a bare address is a host.
/// A network inside `::ffff:0:0/96` (IPv4-mapped IPv6) is the IPv4 network
/// it stands for (`::ffff:127.0.0.0/104` is `127.0.0.0/8`): the kernel sends
/// such traffic as IPv4 and events report it so. A shorter IPv6 network
/// (`::/0`) covers only IPv6 destinations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl Scalar for Cidr {
    const EXPECTED: &'static str = "a CIDR such as \"10.0.0.0/8\" or \"::1/128\", or an address";

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let net = IpNet::from_str(text)
            .or_else(|_| std::net::IpAddr::from_str(text).map(IpNet::from))
            .map_err(|_| format!("bad CIDR {text:?}"))?
            .trunc();
        Ok(Self(match net {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
                .addr()
                .to_ipv4_mapped()
                .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
                .map_or(net, IpNet::V4),
            _ => net,
        }))
    }
}

/// A port or inclusive port range (`22`, `8000-8100`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for a single port).
    pub last: u16,
}

impl Scalar for PortRange {
    const EXPECTED: &'static str = "a port 1-65535 or a range such as \"8000-8100\"";

    fn parse(text: &str) -> Result<Self, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("bad port {p:?}"))
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(text)?, port(text)?),
        };
        if first > last {
            return Err(format!("port range {text:?} is reversed"));
        }
        Ok(Self { first, last })
    }
}

/// A signal by name (`SIGTERM`, `TERM`) or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalValue(pub nix::sys::signal::Signal);

impl Scalar for SignalValue {
    const EXPECTED: &'static str = "a signal such as \"SIGTERM\", \"KILL\" or 9";

    fn parse(text: &str) -> Result<Self, String> {
        use nix::sys::signal::Signal;
        let text = text.trim();
        if let Ok(n) = text.parse::<i32>() {
            return Signal::try_from(n)
                .map(Self)
                .map_err(|_| format!("unknown signal {n}"));
        }
        let upper = text.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&name)
            .map(Self)
            .map_err(|_| format!("unknown signal {text:?}"))
    }
}

impl Default for SignalValue {
    fn default() -> Self {
        Self(nix::sys::signal::Signal::SIGKILL)
    }
}

/// Text with `{field.path}` placeholders filled from the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// The text as written.
    pub source: String,
    /// Literal text and field references, in order.
    pub parts: Vec<TemplatePart>,
}

/// One piece of a [`Template`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplatePart {
    /// Copied as is.
    Text(String),
    /// Replaced by the event field at this dotted path.
    Field(String),
}

impl Scalar for Template {
    const EXPECTED: &'static str = "text with {field} placeholders such as \"{process.exe}\"";

    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
            let field = &after[..close];
            let valid = !field.is_empty()
                && field.split('.').all(|s| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            if !valid {
                return Err(format!("bad placeholder {{{field}}} in {text:?}"));
            }
            parts.push(TemplatePart::Field(field.to_string()));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched '}}' in {text:?}"));
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_string()));
        }
        Ok(Self {
            source: text.to_string(),
            parts,
        })
    }
}

impl Template {
    /// The field paths this template refers to.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Field(f) => Some(f.as_str()),
            TemplatePart::Text(_) => None,
        })
    }

    /// Fills the placeholders from `event` (a JSON object); a field the
    /// event lacks renders as an empty string.
    pub fn render(&self, event: &serde_json::Value) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Field(path) => {
                    let value = path.split('.').try_fold(event, |v, key| v.get(key));
                    match value {
                        Some(serde_json::Value::String(s)) => out.push_str(s),
                        Some(serde_json::Value::Null) | None => {}
                        Some(other) => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
