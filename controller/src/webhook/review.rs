//! The admission decision, with no IO: the bytes of an `admission.k8s.io/v1`
//! `AdmissionReview` in, the review to answer (or why the body is no review) out.
//! ServiceProfiles by [`review`], the policy kinds by [`review_policy`].
//!
//! A profile is judged by exactly the checks the destination service applies
//! ([`profile::validate_document`]), after a strict decode of `request.object`, so
//! what the webhook admits the controller will serve, and an unknown field is
//! reported with its path instead of being silently dropped.

use crate::profile::{self, Problems};
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt::Write as _;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// A denial's message is cut to about this many bytes: the API server copies it into
/// the client's error, and a profile with thousands of bad routes must not make that
/// error megabytes long.
pub const MAX_MESSAGE: usize = 4096;

/// The part of an `AdmissionReview` the webhook reads. Unknown fields are ignored: the
/// API server may add some, and they do not change the question asked.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

/// A review's request, as both webhooks read it.
#[derive(Debug, Deserialize)]
pub(super) struct Request {
    pub(super) uid: String,
    /// The kind of the object, as the webhook's rules matched it.
    #[serde(default)]
    pub(super) kind: Option<GroupVersionKind>,
    /// Checked by each webhook (a missing one is no operation it knows).
    #[serde(default)]
    pub(super) operation: String,
    /// The namespace the object is created in: the object's own says the same once
    /// the API server has defaulted it, but the request's is always there.
    #[serde(default)]
    pub(super) namespace: Option<String>,
    #[serde(default)]
    pub(super) object: Option<Value>,
    /// A dry run: nothing the webhook does may outlast the answer.
    #[serde(default, rename = "dryRun")]
    pub(super) dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct GroupVersionKind {
    pub(super) group: String,
    pub(super) kind: String,
}

/// The answer to one review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewed {
    /// The request's `uid`, echoed as the API server requires.
    pub uid: String,
    pub decision: Decision,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Denied, with every problem (`path: reason`, one per line), bounded in size.
    Denied(String),
}

/// A body that is not an `admission.k8s.io/v1` `AdmissionReview` with a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid AdmissionReview: {0}")]
pub struct BadReview(String);

// === impl Reviewed ===

impl Reviewed {
    /// The `AdmissionReview` to answer with, as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let response = match &self.decision {
            Decision::Allowed => json!({ "uid": self.uid, "allowed": true }),
            Decision::Denied(message) => json!({
                "uid": self.uid,
                "allowed": false,
                "status": { "code": 400, "message": message },
            }),
        };
        answer_with(response)
    }
}

/// The request of an `admission.k8s.io/v1` `AdmissionReview`: the one reading of the
/// envelope both webhooks share (strict JSON, nothing after it, the right apiVersion
/// and kind, a request with a uid).
pub(super) fn read_request(body: &[u8]) -> Result<Request, BadReview> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let review: Review = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| BadReview(at_path(e.path(), e.inner())))?;
    de.end()
        .map_err(|e| BadReview(format!("trailing data after the review: {e}")))?;
    if review.api_version != API_VERSION || review.kind != KIND {
        return Err(BadReview(format!(
            "expected apiVersion {API_VERSION:?} and kind {KIND:?}, found {:?} and {:?}",
            review.api_version, review.kind
        )));
    }
    let request = review
        .request
        .ok_or_else(|| BadReview("request: required".into()))?;
    if request.uid.is_empty() {
        return Err(BadReview("request.uid: required".into()));
    }
    Ok(request)
}

/// An `AdmissionReview` answering with `response`, as JSON.
pub(super) fn answer_with(response: Value) -> Vec<u8> {
    let review = json!({ "apiVersion": API_VERSION, "kind": KIND, "response": response });
    serde_json::to_vec(&review).unwrap_or_default()
}

/// Reviews one request: DELETE (and CONNECT) are always allowed; CREATE and UPDATE
/// are allowed only for a valid profile named `<svc>.<ns>.svc.<cluster_domain>`.
pub fn review(body: &[u8], cluster_domain: &str) -> Result<Reviewed, BadReview> {
    review_with(body, |kind, object, namespace| {
        decide(kind, object, namespace, cluster_domain)
    })
}

/// Reviews one request of a policy kind (`policy.mesh.rs`): allowed only when
/// `mesh_core::policy::validate_value` finds nothing wrong, the same checks as `mesh
/// policy validate`'s and the index's.
pub fn review_policy(body: &[u8]) -> Result<Reviewed, BadReview> {
    review_with(body, decide_policy)
}

/// The operation's rule, shared by the validators: DELETE and CONNECT allowed (a
/// removal cannot make anything invalid), CREATE and UPDATE judged by `judge`.
fn review_with(
    body: &[u8],
    judge: impl FnOnce(Option<GroupVersionKind>, Option<Value>, Option<&str>) -> Decision,
) -> Result<Reviewed, BadReview> {
    let request = read_request(body)?;
    let decision = match request.operation.as_str() {
        // Removing a profile can never make one invalid; CONNECT carries no profile.
        "DELETE" | "CONNECT" => Decision::Allowed,
        "CREATE" | "UPDATE" => judge(request.kind, request.object, request.namespace.as_deref()),
        other => {
            return Err(BadReview(format!(
                "request.operation: unknown operation {other:?}"
            )))
        }
    };
    Ok(Reviewed {
        uid: request.uid,
        decision,
    })
}

fn decide(
    kind: Option<GroupVersionKind>,
    object: Option<Value>,
    namespace: Option<&str>,
    domain: &str,
) -> Decision {
    // A webhook configuration that sends other kinds here is wrong; saying so beats
    // judging a Pod as a profile.
    if let Some(kind) = kind {
        if kind.group != profile::GROUP || kind.kind != profile::KIND {
            return Decision::Denied(format!(
                "request.kind: this webhook validates {}/{} objects, not {}/{}",
                profile::GROUP,
                profile::KIND,
                kind.group,
                kind.kind
            ));
        }
    }
    let object = match object_in(object, namespace) {
        Ok(object) => object,
        Err(denied) => return denied,
    };
    // Every problem, decoding's included, as `mesh profile validate` names them.
    match profile::validate_value(object, domain) {
        Ok(_) => Decision::Allowed,
        Err(problems) => Decision::Denied(bounded(&problems, MAX_MESSAGE)),
    }
}

/// The request's object, judged where it is created (its namespace filled in from
/// the request's when it has none).
fn object_in(object: Option<Value>, namespace: Option<&str>) -> Result<Value, Decision> {
    let Some(mut object) = object.filter(|o| !o.is_null()) else {
        return Err(Decision::Denied(
            "request.object: required for CREATE and UPDATE".into(),
        ));
    };
    if let (Some(ns), Some(metadata)) = (
        namespace.filter(|ns| !ns.is_empty()),
        object.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        metadata
            .entry("namespace")
            .or_insert_with(|| Value::String(ns.to_string()));
    }
    Ok(object)
}

fn decide_policy(
    kind: Option<GroupVersionKind>,
    object: Option<Value>,
    namespace: Option<&str>,
) -> Decision {
    use mesh_core::policy;
    if let Some(kind) = kind {
        if kind.group != policy::GROUP || policy::Kind::from_name(&kind.kind).is_none() {
            return Decision::Denied(format!(
                "request.kind: this webhook validates {} objects, not {}/{}",
                policy::GROUP,
                kind.group,
                kind.kind
            ));
        }
    }
    let object = match object_in(object, namespace) {
        Ok(object) => object,
        Err(denied) => return denied,
    };
    match policy::validate_value(object) {
        Ok(_) => Decision::Allowed,
        Err(problems) => Decision::Denied(bounded(&problems, MAX_MESSAGE)),
    }
}

fn at_path(path: &serde_path_to_error::Path, error: &serde_json::Error) -> String {
    match path.to_string() {
        p if p == "." => error.to_string(),
        p => format!("{p}: {error}"),
    }
}

/// Every problem, one per line, while they fit in about `max` bytes; then how many
/// were left out.
fn bounded(problems: &Problems, max: usize) -> String {
    let mut out = String::new();
    for (i, problem) in problems.0.iter().enumerate() {
        let line = problem.to_string();
        let sep = usize::from(i > 0);
        if out.len() + sep + line.len() > max {
            if i == 0 {
                // One huge problem (a regex quoted in full): keep its start.
                out.push_str(truncate(&line, max));
                out.push('…');
                if problems.0.len() > 1 {
                    let _ = write!(out, "\n... and {} more problems", problems.0.len() - 1);
                }
            } else {
                let _ = write!(out, "\n... and {} more problems", problems.0.len() - i);
            }
            return out;
        }
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&line);
    }
    out
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
