//! Keep parsing after a bad value, so `reflex check` reports every mistake in
//! a file at once. A [`Checked`] scalar that fails to parse records the error
//! (which serde_yaml marks with its line and column) and stands as
//! [`Checked::Invalid`]; the rest of the document is still read. Only scalars
//! are checked this way: a container that fails half-read would leave the
//! parser mid-value, so structural errors end their document instead.
use std::{cell::RefCell, fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{self, EnumAccess, IgnoredAny, MapAccess, SeqAccess, VariantAccess as _, Visitor},
};

use super::value::Scalar;

thread_local! {
    /// Errors recorded during the current [`collect`] call on this thread.
    static SINK: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// A value that parsed, or the placeholder of one whose error was recorded.
#[derive(Clone, Debug, PartialEq)]
pub enum Checked<T> {
    /// Parsed and valid.
    Valid(T),
    /// Invalid; the error is in the sink.
    Invalid,
}

impl<T> Checked<T> {
    /// The value, if valid.
    pub fn valid(self) -> Option<T> {
        match self {
            Checked::Valid(v) => Some(v),
            Checked::Invalid => None,
        }
    }

    /// A reference to the value, if valid.
    pub fn as_ref(&self) -> Option<&T> {
        match self {
            Checked::Valid(v) => Some(v),
            Checked::Invalid => None,
        }
    }
}

impl<T: Default> Default for Checked<T> {
    fn default() -> Self {
        Checked::Valid(T::default())
    }
}

impl<'de, T: Scalar> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_any(CheckedVisitor(PhantomData::<T>)) {
            Ok(value) => Ok(value),
            // The scalar was consumed before the visitor failed, so the rest
            // of the document is intact and parsing can go on.
            Err(err) if record(err.to_string()) => Ok(Checked::Invalid),
            Err(err) => Err(err),
        }
    }
}

/// Records `message` in the active sink; false when no sink is active.
pub(super) fn record(message: String) -> bool {
    SINK.with(|sink| match sink.borrow_mut().as_mut() {
        Some(errors) => {
            errors.push(message);
            true
        }
        None => false,
    })
}

/// Parses scalars with `T`; drains a mapping or sequence given in its place
/// (so the document stays readable) and records that mistake.
struct CheckedVisitor<T>(PhantomData<T>);

impl<T: Scalar> CheckedVisitor<T> {
    fn parse<E: de::Error>(text: &str) -> Result<Checked<T>, E> {
        T::parse(text)
            .map(Checked::Valid)
            .map_err(|msg| E::custom(format!("{msg}; expected {}", T::EXPECTED)))
    }

    /// Records a container found in a scalar's place. The container was read
    /// whole, but serde_yaml consumes its closing event only when the
    /// visitor succeeds, so this must not fail (a fuzzed input showed the
    /// parser panicking on the stray end otherwise).
    fn misplaced<E: de::Error>(found: &str) -> Result<Checked<T>, E> {
        let message = format!("found {found}, expected {}", T::EXPECTED);
        if record(message.clone()) {
            Ok(Checked::Invalid)
        } else {
            Err(E::custom(message))
        }
    }
}

impl<'de, T: Scalar> Visitor<'de> for CheckedVisitor<T> {
    type Value = Checked<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Self::parse(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Self::parse(if v { "true" } else { "false" })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Self::parse(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Self::parse(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Self::parse(&v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "found nothing, expected {}",
            T::EXPECTED
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Self::misplaced("a mapping")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Self::misplaced("a list")
    }

    /// A YAML tag (`!name value`) arrives as an enum; its value is read too,
    /// or the parser would hand the same value over again, for ever (found
    /// by the `policy` fuzz target).
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let (tag, variant) = data.variant::<String>()?;
        variant.newtype_variant::<IgnoredAny>()?;
        // Nothing of it is left to consume, so failing is safe here and lets
        // serde_yaml add the place.
        Err(de::Error::custom(format!(
            "found a value tagged !{tag}, expected {}",
            T::EXPECTED
        )))
    }
}

/// Runs `parse` with a fresh sink on this thread; returns its result and the
/// errors that [`Checked`] fields recorded meanwhile.
pub fn collect<R>(parse: impl FnOnce() -> R) -> (R, Vec<String>) {
    let previous = SINK.with(|sink| sink.replace(Some(Vec::new())));
    let result = parse();
    let errors = SINK.with(|sink| sink.replace(previous)).unwrap_or_default();
    (result, errors)
}

/// A 1-based position in a policy file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Splits serde_yaml's "MESSAGE at line L column C" into message and position.
pub fn split_location(text: &str) -> (String, Option<Position>) {
    if let Some((message, tail)) = text.rsplit_once(" at line ")
        && let Some((line, column)) = tail.split_once(" column ")
        && let (Ok(line), Ok(column)) = (line.trim().parse(), column.trim().parse())
    {
        return (message.to_string(), Some(Position { line, column }));
    }
    (text.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pair {
        a: Checked<u32>,
        b: Checked<u32>,
    }

    #[test]
    fn keeps_going_after_an_error() {
        let (pair, errors) = collect(|| serde_yaml::from_str::<Pair>("a: x\nb: y\n"));
        let pair = pair.expect("the document still parses");
        assert_eq!((pair.a, pair.b), (Checked::Invalid, Checked::Invalid));
        assert_eq!(errors.len(), 2, "{errors:?}");
        let (_, pos) = split_location(&errors[1]);
        assert_eq!(pos, Some(Position { line: 2, column: 4 }));
    }

    #[test]
    fn a_tagged_value_is_read_whole_and_reported() {
        #[derive(Debug, Deserialize)]
        struct List {
            paths: Vec<Checked<u32>>,
        }
        let (list, errors) = collect(|| serde_yaml::from_str::<List>("paths: [!x 1, 2]\n"));
        let list = list.expect("the document still parses");
        assert_eq!(list.paths, [Checked::Invalid, Checked::Valid(2)]);
        assert!(errors[0].contains("tagged !x"), "{errors:?}");
    }

    #[test]
    fn a_misplaced_list_or_mapping_leaves_the_document_readable() {
        let (pair, errors) =
            collect(|| serde_yaml::from_str::<Pair>("a: [x: 1, 2]\nb: {c: [3]}\n"));
        let pair = pair.expect("the document still parses");
        assert_eq!((pair.a, pair.b), (Checked::Invalid, Checked::Invalid));
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn outside_collect_errors_propagate() {
        assert!(serde_yaml::from_str::<Pair>("a: x\nb: 1\n").is_err());
    }
}
