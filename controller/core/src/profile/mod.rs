//! ServiceProfiles (`mesh.rs/v1alpha1`, kind `ServiceProfile`): the spec as users write
//! it, Linkerd's `linkerd.io/v1alpha2` field for field plus a per-route retry cap
//! ([`spec`]); validation that names the field and the reason of every problem and
//! turns a valid spec into the routes, budget and traffic split the proxy receives
//! ([`validate`]); the annotated example `mesh profile --template` prints, which the
//! dashboard shows too ([`template`]). Durations and path regexes are read by the rules
//! every side shares (`mesh_api::duration`, `mesh_api::path_regex`).
//!
//! This module is pure: the destination service, the file backend, the admission
//! webhook and `mesh profile validate` all use the same checks, so a profile one of
//! them accepts, all accept.

pub mod decode;
pub mod spec;
pub mod template;
pub mod validate;

use crate::yaml;

pub use self::{
    spec::ServiceProfile,
    validate::{validate, validate_document, Invalid, Problems, Validated},
};

pub const GROUP: &str = "mesh.rs";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "mesh.rs/v1alpha1";
pub const KIND: &str = "ServiceProfile";
pub const PLURAL: &str = "serviceprofiles";

/// Parses one YAML document as a profile and validates it: every problem is named,
/// each with its field (for YAML problems too) and why; the first decoding problem
/// also with its line and column.
pub fn parse_yaml(text: &str, cluster_domain: Option<&str>) -> Result<Validated, Problems> {
    parse_yaml_as::<ServiceProfile, _>(text, |profile| validate_document(profile, cluster_domain))
}

/// Parses one YAML document as a `T` and checks it with `check`, naming every problem
/// as [`parse_yaml`] does: the first decoding problem with its line and column, every
/// other decoding problem in the document's order, then `check`'s problems with what
/// did decode. Every kind of resource read from YAML (profiles, the policy kinds) is
/// read this one way.
pub fn parse_yaml_as<T: serde::de::DeserializeOwned, V>(
    text: &str,
    check: impl Fn(&T) -> Result<V, Problems>,
) -> Result<V, Problems> {
    // The typed parse finds the first problem with its location in the text.
    let first = match yaml::from_str::<T>(text) {
        Ok(document) => return check(&document),
        Err(e) => e,
    };
    let at = first
        .location
        .map(|(line, column)| format!(" (line {line}, column {column})"))
        .unwrap_or_default();
    let first = Invalid {
        path: root_path(&first.path),
        reason: format!("{}{at}", first.message),
    };
    // The rest, found by decoding what the YAML holds once its bad fields are out. A
    // document that is not even YAML, or not JSON-like, has just the one problem.
    let (Ok(value), Ok(order)) = (
        yaml::from_str::<serde_json::Value>(text),
        yaml::from_str::<Shape>(text),
    ) else {
        return Err(Problems(vec![first]));
    };
    let mut decoded = decode::decode_all::<T>(value);
    // The decoder saw mappings in key order; the user reads the document in its own.
    decoded
        .problems
        .sort_by_cached_key(|p| document_position(&order, &p.steps));
    let mut problems: Vec<Invalid> = decoded
        .problems
        .iter()
        .map(|p| {
            let path = root_path(&p.path);
            match path == first.path {
                true => first.clone(),
                false => Invalid {
                    path,
                    reason: p.reason.clone(),
                },
            }
        })
        .collect();
    if !problems.contains(&first) {
        problems.insert(0, first);
    }
    Err(Problems(with_semantic_problems(
        problems,
        decoded.problems.iter().map(|p| p.path.clone()),
        decoded.value.map(|document| check(&document)),
    )))
}

/// Decodes and validates a ServiceProfile object as the API server holds it: its
/// name, namespace and `spec` (JSON). What the kubernetes backend and `mesh check`
/// read, so both judge an object alike; decoding problems name their `spec.` path,
/// every one of them.
pub fn validate_object(
    name: &str,
    namespace: &str,
    spec: serde_json::Value,
    cluster_domain: &str,
) -> Result<Validated, Problems> {
    let decoded = decode::decode_all::<spec::ServiceProfileSpec>(spec);
    let document = |spec| ServiceProfile {
        metadata: spec::Metadata {
            name: name.to_string(),
            namespace: Some(namespace.to_string()),
            other: Default::default(),
        },
        spec,
        ..Default::default()
    };
    if decoded.problems.is_empty() {
        if let Some(spec) = decoded.value {
            return validate_document(&document(spec), Some(cluster_domain));
        }
    }
    let in_spec = |p: &str| match p {
        "" => "spec".to_string(),
        p if p.starts_with('[') => format!("spec{p}"),
        p => format!("spec.{p}"),
    };
    let problems = decoded
        .problems
        .iter()
        .map(|p| Invalid {
            path: in_spec(&p.path),
            reason: p.reason.clone(),
        })
        .collect();
    Err(Problems(with_semantic_problems(
        problems,
        decoded.problems.iter().map(|p| in_spec(&p.path)),
        decoded
            .value
            .map(|spec| validate_document(&document(spec), Some(cluster_domain))),
    )))
}

/// Decodes and validates a whole ServiceProfile object given as JSON (an admission
/// request's `object`): every decoding problem with its path from the document's root,
/// then the semantic checks' problems of what did decode, as [`parse_yaml`] names them
/// (without lines: JSON has none that a user wrote).
pub fn validate_value(
    object: serde_json::Value,
    cluster_domain: &str,
) -> Result<Validated, Problems> {
    decode_value_as::<ServiceProfile, _>(object, |profile| {
        validate_document(profile, Some(cluster_domain))
    })
}

/// Decodes a whole object given as JSON as a `T` and checks it with `check`, naming
/// every problem as [`validate_value`] does.
pub fn decode_value_as<T: serde::de::DeserializeOwned, V>(
    object: serde_json::Value,
    check: impl Fn(&T) -> Result<V, Problems>,
) -> Result<V, Problems> {
    let decoded = decode::decode_all::<T>(object);
    if decoded.problems.is_empty() {
        if let Some(document) = decoded.value {
            return check(&document);
        }
    }
    let problems = decoded
        .problems
        .iter()
        .map(|p| Invalid {
            path: root_path(&p.path),
            reason: p.reason.clone(),
        })
        .collect();
    Err(Problems(with_semantic_problems(
        problems,
        decoded.problems.iter().map(|p| p.path.clone()),
        decoded.value.map(|document| check(&document)),
    )))
}

/// Decoding problems, then the semantic checks' problems of what did decode, except
/// those about a field decoding already took out (they would only echo it).
fn with_semantic_problems<V>(
    mut problems: Vec<Invalid>,
    taken_out: impl Iterator<Item = String>,
    semantic: Option<Result<V, Problems>>,
) -> Vec<Invalid> {
    let taken_out: Vec<String> = taken_out.collect();
    if let Some(Err(Problems(more))) = semantic {
        problems.extend(
            more.into_iter()
                .filter(|p| !taken_out.iter().any(|t| decode::is_within(&p.path, t))),
        );
    }
    problems
}

/// Where `steps` lead in `doc`, as the position of each step among its siblings:
/// sorting by it puts paths in the document's order (a step not found sorts last).
fn document_position(doc: &Shape, steps: &[decode::Step]) -> Vec<usize> {
    let mut cur = Some(doc);
    steps
        .iter()
        .map(|step| {
            let (position, next) = match (step, cur) {
                (decode::Step::Key(key), Some(Shape::Map(m))) => m
                    .iter()
                    .position(|(k, _)| k == key)
                    .map_or((usize::MAX, None), |i| (i, Some(&m[i].1))),
                (decode::Step::Index(i), Some(Shape::Seq(s))) => (*i, s.get(*i)),
                _ => (usize::MAX, None),
            };
            cur = next;
            position
        })
        .collect()
}

/// A document's mappings and lists with their keys in the document's order (a JSON
/// value sorts them); scalars are left out.
enum Shape {
    Map(Vec<(String, Shape)>),
    Seq(Vec<Shape>),
    Scalar,
}

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut entries = Vec::new();
        // Keys as the JSON value reads them: `200:` is the key "200".
        while let Some(entry) = map.next_entry::<String, Shape>()? {
            entries.push(entry);
        }
        Ok(Shape::Map(entries))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Shape::Seq(items))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Shape, D::Error> {
        serde::Deserialize::deserialize(de)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }
    fn visit_none<E>(self) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }
}

/// A decoder's path as a problem's: the root is `(document)`.
fn root_path(path: &str) -> String {
    match path {
        "" | "." => "(document)".into(),
        p => p.to_string(),
    }
}

#[cfg(test)]
mod tests;
