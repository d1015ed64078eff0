//! Decoding a document into its Rust type while naming every problem at once, not just
//! the first: `serde` stops at the first error, which would make a user fix a profile
//! one problem per run.
//!
//! Each failed attempt names a field (by its path); that field is then taken out of
//! the document (removed from its mapping, or its list element emptied) and the
//! document decoded again, until it decodes or no progress is made. What was taken out
//! is reported, so the semantic checks that follow on the rest of the document can
//! leave alone what decoding already reported.

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

/// At most this many problems are collected from one document: enough for any real
/// profile, and a bound on the work a pathological one can cause.
const MAX_PROBLEMS: usize = 64;

/// One decoding problem: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeProblem {
    /// The field's path from the document's root, as `routes[0].timeout`; empty for
    /// the root itself.
    pub path: String,
    /// The same path, step by step.
    pub steps: Vec<Step>,
    pub reason: String,
}

/// One step of a path: a mapping's key or a list's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

impl Step {
    fn of(segment: &Segment) -> Option<Self> {
        match segment {
            Segment::Map { key } => Some(Self::Key(key.clone())),
            Segment::Seq { index } => Some(Self::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        }
    }
}

/// The outcome of [`decode_all`].
pub struct Decoded<T> {
    /// The document with its bad fields taken out, decoded (`None` if even that did
    /// not decode).
    pub value: Option<T>,
    /// Every problem, in the order found.
    pub problems: Vec<DecodeProblem>,
}

/// Decodes `doc` as `T`, collecting every problem.
pub fn decode_all<T: DeserializeOwned>(mut doc: Value) -> Decoded<T> {
    let mut problems: Vec<DecodeProblem> = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(&doc) {
            Ok(value) => {
                return Decoded {
                    value: Some(value),
                    problems,
                }
            }
            Err(e) => e,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let problem = DecodeProblem {
            path: render(&segments),
            steps: segments.iter().filter_map(Step::of).collect(),
            reason: error.into_inner().to_string(),
        };
        let repeated = problems.contains(&problem);
        if repeated || problems.len() >= MAX_PROBLEMS || !take_out(&mut doc, &segments) {
            if !repeated {
                problems.push(problem);
            }
            return Decoded {
                value: None,
                problems,
            };
        }
        problems.push(problem);
    }
}

/// Removes what `path` names from `doc`: a mapping's entry is removed (the field takes
/// its default), a list's element becomes an empty mapping (the list keeps its indexes,
/// so later problems keep their paths). `false` when there is nothing to take out.
fn take_out(doc: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = doc;
    for segment in parents {
        cur = match (segment, cur) {
            (Segment::Map { key }, Value::Object(m)) => match m.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Segment::Map { key }, Value::Object(m)) => m.remove(key).is_some(),
        (Segment::Seq { index }, Value::Array(a)) => match a.get_mut(*index) {
            Some(v) if *v != Value::Object(Default::default()) => {
                *v = Value::Object(Default::default());
                true
            }
            _ => false,
        },
        _ => false,
    }
}

fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// Whether `path` is `under` or inside it (`routes[0].timeout` is inside `routes[0]`).
pub fn is_within(path: &str, under: &str) -> bool {
    under.is_empty()
        || path == under
        || path
            .strip_prefix(under)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::spec::ServiceProfileSpec;

    #[test]
    fn every_type_error_is_named_in_one_run() {
        let doc = serde_json::json!({
            "routes": [
                {"name": "a", "isRetryable": "yes", "condition": {"method": 5}},
                7,
                {"name": "c", "timeout": ["1s"], "bogus": true},
            ],
            "retryBudget": {"retryRatio": "lots", "ttl": "10s"},
            "dstOverrides": [{"authority": "x", "weight": {"a": 1}}],
        });
        let decoded = decode_all::<ServiceProfileSpec>(doc);
        let paths: Vec<&str> = decoded.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            // Mapping keys in name order (what the decoder sees), lists in theirs.
            [
                "dstOverrides[0].weight",
                "retryBudget.retryRatio",
                "routes[0].condition.method",
                "routes[0].isRetryable",
                "routes[1]",
                "routes[2].bogus",
                "routes[2].timeout",
            ],
            "{:#?}",
            decoded.problems
        );
        assert!(
            decoded.problems[5].reason.contains("unknown field `bogus`"),
            "{:?}",
            decoded.problems[5]
        );
        assert_eq!(
            decoded.problems[4].steps,
            [Step::Key("routes".into()), Step::Index(1)]
        );
        // What is left decodes, for the semantic checks.
        let spec = decoded.value.expect("the rest decodes");
        assert_eq!(spec.routes.len(), 3);
        assert_eq!(spec.routes[2].name, "c");
        assert_eq!(
            spec.retry_budget.and_then(|b| b.ttl).as_deref(),
            Some("10s")
        );
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_one_problem() {
        let decoded = decode_all::<ServiceProfileSpec>(serde_json::json!("just text"));
        assert_eq!(decoded.problems.len(), 1);
        assert_eq!(decoded.problems[0].path, "");
        assert!(decoded.value.is_none());
    }

    #[test]
    fn within() {
        assert!(is_within("routes[0].timeout", "routes[0]"));
        assert!(is_within("routes[0]", "routes[0]"));
        assert!(!is_within("routes[01]", "routes[0]"));
        assert!(!is_within("routesx", "routes"));
        assert!(is_within("anything", ""));
    }
}
