//! YAML in and out, for every reader and writer of YAML in the workspace (the file
//! backend, ServiceProfile documents, `mesh profile`): one library (`serde-saphyr`, the
//! one kube links) set up in one place, so they all take the same YAML and report a
//! problem alike.
//!
//! The dialect is YAML 1.2's core schema, as `serde_yaml` (used before) read it: only
//! `true`/`false` are booleans (`yes` is a string), `010` and `1_000` are strings where
//! the type is not known, `<<` is an ordinary key, and `.inf` in an untyped value becomes
//! `null` (JSON has no infinity). A key repeated in a mapping is an error, as YAML says
//! and as `kubectl` reports it (`serde_yaml` left it to the type: a struct refused a
//! repeated field, a map kept the last value).
//!
//! An [`Error`] names the field's path, its line and column, and a message that repeats
//! neither, in serde's words (`invalid type: string "x", expected u16`).

use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};
use serde_saphyr::{options::MergeKeyPolicy, DuplicateKeyPolicy, Location, NonFiniteFloatPolicy};
use std::{borrow::Cow, fmt};

/// Why a document could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Where in the document, as `services[0].ports[1].port`; `.` for the root.
    pub path: String,
    /// Line and column (1-based), when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong, without the path or the location.
    pub message: String,
}

/// `services[0].port: invalid type: ... at line 3 column 9`, as `serde_yaml` said it.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path != "." {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some((line, column)) = self.location {
            write!(f, " at line {line} column {column}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Reads one YAML document as a `T`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    let mut track = serde_path_to_error::Track::new();
    serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        T::deserialize(serde_path_to_error::Deserializer::new(de, &mut track))
    })
    .map_err(|e| {
        let formatter = Messages { text };
        let message = e.render_with_options(serde_saphyr::render_options! {
            formatter: &formatter,
            snippets: serde_saphyr::SnippetMode::Off,
        });
        let mut path = track.path().to_string();
        // A repeated key fails before the path reaches it: its place is the key's.
        if let serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } = e.without_snippet()
        {
            if let Some(parent) = path.strip_suffix('?') {
                path = format!("{parent}{key}");
            }
        }
        Error {
            path,
            location: e.location().and_then(|l| {
                Some((
                    usize::try_from(l.line()).ok()?,
                    usize::try_from(l.column()).ok()?,
                ))
            }),
            message,
        }
    })
}

/// Writes `value` as a YAML document (block style, no `---`).
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string_with_options(
        value,
        // A long string stays one plain or quoted scalar, as `serde_yaml` wrote it, not a
        // folded `>` block.
        serde_saphyr::ser_options! { prefer_block_scalars: false },
    )
}

/// Writes `value` as a Kubernetes manifest document: as [`to_string`], but a string
/// of several lines (a PEM certificate, a ConfigMap's file) as a literal `|` block,
/// as people write them; a long single-line string (base64) stays one scalar.
pub fn to_manifest_string<T: Serialize>(value: &T) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string_with_options(
        value,
        serde_saphyr::ser_options! { prefer_block_scalars: true, folded_wrap_chars: usize::MAX },
    )
}

/// For `#[serde(deserialize_with)]` on a list, map or struct field: YAML's empty value
/// (`routes:` with nothing after it, or `null`) reads as the empty value of the type,
/// as `serde_yaml` read it. JSON's `null` does too.
pub fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(de).map(Option::unwrap_or_default)
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        duplicate_keys: DuplicateKeyPolicy::Error,
        merge_keys: MergeKeyPolicy::AsOrdinary,
        non_finite_float_policy: NonFiniteFloatPolicy::PassThrough,
        // The message stands alone: the caller reports the location its own way.
        with_snippet: false,
        // Every document is an operator's own file (a discovery file can list tens of
        // thousands of endpoints, each with `labels: *common`), so neither its size nor
        // its number of aliases is limited, as with `serde_yaml`. What stays: at most a
        // million events replayed from aliases (against a "billion laughs"), and 64
        // levels of nesting (deeper would overflow a debug build's stack).
        budget: serde_saphyr::budget! {
            max_events: usize::MAX,
            max_nodes: usize::MAX,
            enforce_alias_anchor_ratio: false,
        },
    }
}

/// serde-saphyr's messages for users, except where serde's own words say more: what was
/// found (quoted from the text) as well as what was expected.
struct Messages<'t> {
    text: &'t str,
}

impl serde_saphyr::MessageFormatter for Messages<'_> {
    fn localizer(&self) -> &dyn serde_saphyr::Localizer {
        &NoLocation
    }

    fn format_message<'a>(&self, err: &'a serde_saphyr::Error) -> Cow<'a, str> {
        use serde_saphyr::Error as E;
        let found = |location: &Location| self.found(location);
        match err {
            E::InvalidScalar { ty, location } => {
                let found = found(location);
                let is_int = ty.starts_with(['i', 'u']) && ty[1..].parse::<u8>().is_ok();
                let kind = match is_int && found.starts_with("integer ") {
                    true => "value",
                    false => "type",
                };
                let ty = match *ty {
                    "floating point" => "a number",
                    ty => ty,
                };
                format!("invalid {kind}: {found}, expected {ty}").into()
            }
            E::InvalidBooleanStrict { location } => {
                format!("invalid type: {}, expected a boolean", found(location)).into()
            }
            E::Unexpected { expected, location } => {
                let expected = match *expected {
                    "sequence start" => "a sequence",
                    "mapping start" => "a map",
                    "string scalar" | "scalar" => "a string, number or boolean",
                    other => other,
                };
                format!("invalid type: {}, expected {expected}", found(location)).into()
            }
            E::SerdeUnknownField {
                field, expected, ..
            } => format!("unknown field `{field}`, {}", one_of(expected, "fields")).into(),
            E::SerdeUnknownVariant {
                variant, expected, ..
            } => format!(
                "unknown variant `{variant}`, {}",
                one_of(expected, "variants")
            )
            .into(),
            other => serde_saphyr::UserMessageFormatter.format_message(other),
        }
    }
}

impl Messages<'_> {
    /// What the text holds at `location`, in serde's words: `integer `70000``,
    /// `string "x"`, `sequence`.
    fn found(&self, location: &Location) -> String {
        if *location == Location::UNKNOWN {
            return "something else".into();
        }
        let span = location.span();
        let start = span.byte_offset().and_then(|o| usize::try_from(o).ok());
        let len = span.byte_len().and_then(|l| usize::try_from(l).ok());
        let Some(start) = start else {
            return "something else".into();
        };
        let node = len
            .and_then(|len| self.text.get(start..start.checked_add(len)?))
            .unwrap_or_default();
        let rest = self.text.get(start..).unwrap_or_default();
        match node.chars().next() {
            // A container's start is a point, not a span: its first character says which.
            None if rest.starts_with("- ") || rest.starts_with("-\n") => "sequence".into(),
            None if rest.is_empty() || rest.starts_with(['\n', '\r', '#']) => "null".into(),
            None => "map".into(),
            Some('[') => "sequence".into(),
            Some('{') => "map".into(),
            // Written as serde writes a string: in double quotes.
            Some('"') => format!("string {node}"),
            Some('\'') => {
                let inner = node.get(1..node.len() - 1).unwrap_or_default();
                format!("string {:?}", inner.replace("''", "'"))
            }
            Some(_) => scalar(node),
        }
    }
}

/// A plain scalar as YAML 1.2's core schema reads it.
fn scalar(s: &str) -> String {
    match s {
        "~" | "null" | "Null" | "NULL" => "null".into(),
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => format!("boolean `{s}`"),
        s if s.parse::<i128>().is_ok() => format!("integer `{s}`"),
        s if s.parse::<f64>().is_ok() => format!("floating point `{s}`"),
        s => format!("string {s:?}"),
    }
}

/// serde's `expected one of ...` of field and variant names.
fn one_of(names: &[&str], what: &str) -> String {
    match names {
        [] => format!("there are no {what}"),
        [one] => format!("expected `{one}`"),
        [a, b] => format!("expected `{a}` or `{b}`"),
        names => {
            let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("expected one of {}", names.join(", "))
        }
    }
}

/// Leaves the location out of the message: [`Error`] holds it apart.
struct NoLocation;

impl serde_saphyr::Localizer for NoLocation {
    fn attach_location<'a>(&self, base: Cow<'a, str>, _: Location) -> Cow<'a, str> {
        base
    }
}

#[cfg(test)]
mod tests;
