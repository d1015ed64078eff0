//! Reviews, the API server's two POST-only resources a controller asks questions of:
//! `authentication.k8s.io/v1` TokenReview (whose token is this?) and
//! `authorization.k8s.io/v1` SubjectAccessReview (may this user do that?). The test
//! says which tokens name which users ([`crate::FakeKube::add_token`]) and what each
//! user may do ([`crate::FakeKube::allow`]); everything else is unauthenticated or
//! denied, as RBAC denies what no role grants.

use serde_json::{json, Value};
use std::collections::HashMap;

/// What the test configured.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    /// Token → (username, groups).
    tokens: HashMap<String, (String, Vec<String>)>,
    /// What users may do.
    allowed: Vec<Access>,
}

/// One permission: `verb` on `resource` of `group` in `namespace` (`None`: every
/// namespace), for `user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Access {
    pub(crate) user: String,
    pub(crate) verb: String,
    pub(crate) group: String,
    pub(crate) resource: String,
    pub(crate) namespace: Option<String>,
}

impl Rules {
    pub(crate) fn add_token(&mut self, token: &str, user: &str, groups: &[&str]) {
        self.tokens.insert(
            token.to_string(),
            (
                user.to_string(),
                groups.iter().map(|g| g.to_string()).collect(),
            ),
        );
    }

    pub(crate) fn allow(&mut self, access: Access) {
        self.allowed.push(access);
    }

    /// A TokenReview's answer: the review as sent, with its status.
    pub(crate) fn token_review(&self, mut review: Value) -> Result<Value, String> {
        let token = review["spec"]["token"]
            .as_str()
            .ok_or("spec.token: required")?
            .to_string();
        let status = match self.tokens.get(&token) {
            Some((user, groups)) => json!({
                "authenticated": true,
                "user": {"username": user, "groups": groups},
            }),
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        review["status"] = status;
        Ok(review)
    }

    /// A SubjectAccessReview's answer: allowed when a permission matches the user and
    /// the resource attributes exactly (namespace: or every namespace).
    pub(crate) fn access_review(&self, mut review: Value) -> Result<Value, String> {
        let spec = &review["spec"];
        let user = spec["user"].as_str().ok_or("spec.user: required")?;
        let attrs = &spec["resourceAttributes"];
        if !attrs.is_object() {
            return Err(
                "spec.resourceAttributes: required (this fake checks resources only)".into(),
            );
        }
        let field = |name: &str| attrs[name].as_str().unwrap_or("").to_string();
        let (verb, group, resource, namespace) = (
            field("verb"),
            field("group"),
            field("resource"),
            field("namespace"),
        );
        let allowed = self.allowed.iter().any(|a| {
            a.user == user
                && a.verb == verb
                && a.group == group
                && a.resource == resource
                && a.namespace.as_deref().is_none_or(|ns| ns == namespace)
        });
        let status = if allowed {
            json!({"allowed": true, "reason": "allowed by the fake's rules"})
        } else {
            json!({
                "allowed": false,
                "reason": format!(
                    "no rule allows {user:?} to {verb} {resource}.{group} in namespace {namespace:?}"
                ),
            })
        };
        review["status"] = status;
        Ok(review)
    }
}
