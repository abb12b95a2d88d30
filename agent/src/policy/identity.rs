//! Conditions on who a process is beyond its executable: its systemd unit,
//! container, cgroup, command line and login. The YAML shapes that take
//! either a flag or globs (`container`) or either globs or positions
//! (`argv`), and their compiled matchers.
use std::{fmt, marker::PhantomData};

use globset::GlobSet;
use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor},
};

use super::{
    checked::{Checked, record},
    value::{Scalar, glob_set},
};
use crate::events::ProcessContext;

/// A glob over free text (`*` crosses `/`): a command line, an image name.
#[derive(Clone, Debug)]
pub struct TextGlob {
    glob: globset::Glob,
}

impl TextGlob {
    /// The compiled pattern.
    pub fn glob(&self) -> &globset::Glob {
        &self.glob
    }
}

impl Scalar for TextGlob {
    const EXPECTED: &'static str = "text or a glob such as \"*--privileged*\"";

    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty pattern".into());
        }
        globset::GlobBuilder::new(text)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map(|glob| Self { glob })
            .map_err(|e| format!("bad glob {text:?}: {}", e.kind()))
    }
}

/// `container:` as written: `true` / `false`, or globs on the container's
/// id, name or image.
#[derive(Debug)]
pub enum ContainerSpec {
    /// In a container (`true`) or not (`false`).
    Flag(bool),
    /// In a container whose id, name or image one of these matches.
    Globs(Vec<Checked<TextGlob>>),
    /// Not valid; the error is recorded.
    Invalid,
    /// A mapping in its place, which the compiler reports at its place.
    Mapping,
}

/// `argv:` as written: globs on the command line joined by spaces, or
/// position → glob.
#[derive(Debug)]
pub enum ArgvSpec {
    /// Any glob matches `argv` joined with single spaces.
    Joined(Vec<Checked<TextGlob>>),
    /// Every position given holds an argument its glob matches.
    Positions(Vec<(Checked<u32>, Checked<TextGlob>)>),
    /// Not valid; the error is recorded.
    Invalid,
}

/// Reads a flag, a glob, a list or a mapping; what each shape becomes is
/// the caller's. Only a scalar may fail (it is consumed whole, so the
/// document stays readable); list and mapping items are checked one by one.
struct ShapeVisitor<T>(PhantomData<T>);

trait Shaped: Sized {
    const EXPECTED: &'static str;
    fn flag(v: bool) -> Result<Self, String>;
    fn text(v: &str) -> Result<Self, String>;
    fn list<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error>;
    fn map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
    fn invalid() -> Self;
}

impl<'de, T: Shaped> Visitor<'de> for ShapeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        T::flag(v).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::text(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::text(&v.to_string()).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::text(&v.to_string()).map_err(E::custom)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::list(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::map(map)
    }
}

fn shaped<'de, D: Deserializer<'de>, T: Shaped>(d: D) -> Result<T, D::Error> {
    match d.deserialize_any(ShapeVisitor(PhantomData::<T>)) {
        Ok(v) => Ok(v),
        // A scalar failed after it was read: serde_yaml has placed the
        // error, and the rest of the document is intact.
        Err(err) if record(err.to_string()) => Ok(T::invalid()),
        Err(err) => Err(err),
    }
}

fn items<'de, A: SeqAccess<'de>, T: Scalar>(mut seq: A) -> Result<Vec<Checked<T>>, A::Error> {
    let mut out = Vec::new();
    while let Some(item) = seq.next_element::<Checked<T>>()? {
        out.push(item);
    }
    Ok(out)
}

impl Shaped for ContainerSpec {
    const EXPECTED: &'static str =
        "true, false, or a list of globs on the container's id, name or image";

    fn flag(v: bool) -> Result<Self, String> {
        Ok(ContainerSpec::Flag(v))
    }
    fn text(v: &str) -> Result<Self, String> {
        match v {
            "true" | "false" => Ok(ContainerSpec::Flag(v == "true")),
            _ => TextGlob::parse(v)
                .map(|g| ContainerSpec::Globs(vec![Checked::Valid(g)]))
                .map_err(|m| format!("{m}; expected {}", Self::EXPECTED)),
        }
    }
    fn list<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        items(seq).map(ContainerSpec::Globs)
    }
    /// Drained, not failed: the parser has not yet consumed its end.
    fn map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(ContainerSpec::Mapping)
    }
    fn invalid() -> Self {
        ContainerSpec::Invalid
    }
}

impl Shaped for ArgvSpec {
    const EXPECTED: &'static str =
        "a list of globs on the command line, or a mapping of argument positions to globs";

    fn flag(_: bool) -> Result<Self, String> {
        Err(format!("found a boolean, expected {}", Self::EXPECTED))
    }
    fn text(v: &str) -> Result<Self, String> {
        TextGlob::parse(v)
            .map(|g| ArgvSpec::Joined(vec![Checked::Valid(g)]))
            .map_err(|m| format!("{m}; expected {}", Self::EXPECTED))
    }
    fn list<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        items(seq).map(ArgvSpec::Joined)
    }
    fn map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut out = Vec::new();
        while let Some(entry) = map.next_entry::<Checked<u32>, Checked<TextGlob>>()? {
            out.push(entry);
        }
        Ok(ArgvSpec::Positions(out))
    }
    fn invalid() -> Self {
        ArgvSpec::Invalid
    }
}

impl<'de> Deserialize<'de> for ContainerSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        shaped(d)
    }
}

impl<'de> Deserialize<'de> for ArgvSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        shaped(d)
    }
}

/// A compiled `container:`.
#[derive(Debug)]
pub enum ContainerMatch {
    /// In a container or not.
    Flag(bool),
    /// A container whose id, name or image matches.
    Globs(GlobSet),
}

impl ContainerMatch {
    /// What `container:` takes, for messages.
    pub const EXPECTED: &'static str = <ContainerSpec as Shaped>::EXPECTED;

    /// Compiles `spec`; `None` when part of it is invalid (reported, or a
    /// mapping the caller reports).
    pub fn compile(spec: ContainerSpec) -> Option<Option<Self>> {
        match spec {
            ContainerSpec::Flag(v) => Some(Some(Self::Flag(v))),
            ContainerSpec::Globs(globs) => {
                let globs = super::model::all_valid(globs)?;
                Some(glob_set(globs.iter().map(TextGlob::glob)).map(Self::Globs))
            }
            ContainerSpec::Invalid | ContainerSpec::Mapping => None,
        }
    }

    /// Whether `process` runs in a container this selects. A process whose
    /// cgroup is unknown is neither in a container nor on the host.
    pub fn matches(&self, process: &ProcessContext) -> bool {
        let Some(identity) = process.identity.as_deref() else {
            return false;
        };
        match (self, identity.container.as_ref()) {
            (Self::Flag(want), found) => *want == found.is_some(),
            (Self::Globs(_), None) => false,
            (Self::Globs(set), Some(c)) => {
                let mut names = [Some(&c.id), c.name.as_ref(), c.image.as_ref()].into_iter();
                names.any(|n| n.is_some_and(|n| set.is_match(n)))
            }
        }
    }
}

/// A compiled `argv:`.
#[derive(Debug)]
pub enum ArgvMatch {
    /// Globs on the joined command line.
    Joined(GlobSet),
    /// Position → glob, all of them.
    Positions(Vec<(usize, globset::GlobMatcher)>),
}

impl ArgvMatch {
    /// Compiles `spec`; `None` when part of it is invalid (already reported).
    pub fn compile(spec: ArgvSpec) -> Option<Option<Self>> {
        match spec {
            ArgvSpec::Joined(globs) => {
                let globs = super::model::all_valid(globs)?;
                Some(glob_set(globs.iter().map(TextGlob::glob)).map(Self::Joined))
            }
            ArgvSpec::Positions(entries) => {
                let mut out = Vec::new();
                for (at, glob) in entries {
                    let (at, glob) = (at.valid()?, glob.valid()?);
                    out.push((at as usize, glob.glob().compile_matcher()));
                }
                Some((!out.is_empty()).then_some(Self::Positions(out)))
            }
            ArgvSpec::Invalid => None,
        }
    }

    /// Whether `process`'s arguments (at most the first 1 KiB of them)
    /// match.
    pub fn matches(&self, process: &ProcessContext) -> bool {
        match self {
            Self::Joined(set) => set.is_match(process.argv.join(" ")),
            Self::Positions(each) => each
                .iter()
                .all(|(at, glob)| process.argv.get(*at).is_some_and(|a| glob.is_match(a))),
        }
    }
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
