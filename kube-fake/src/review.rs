//! Who a request is and what it may do, and the reviews that ask about it: the
//! `authentication.k8s.io/v1` TokenReview (whose token is this?), and the
//! `authorization.k8s.io/v1` SubjectAccessReview (may this user do that?) and
//! SelfSubjectAccessReview (may I?).
//!
//! The test says which tokens name which users ([`crate::FakeKube::add_token`]), what
//! each user may do ([`crate::FakeKube::allow`]) and what no one may do
//! ([`crate::FakeKube::deny`]). A request with no token, or one the test never named,
//! is the kubeconfig's administrator, [`ADMIN`] in `system:masters`, as a cluster
//! admin's client certificate is (the fake serves plain HTTP, so there are no client
//! certificates) — unless [`crate::FakeKube::set_authenticate`] turned on strict
//! authentication, where it gets `401 Unauthorized`. `system:masters` may do
//! everything not denied, as RBAC lets it; anyone else only what a rule allows. Denied
//! requests are refused with the API server's `403 Forbidden`, reviews answer
//! `allowed: false` with the reason.

use serde_json::{json, Value};
use std::collections::HashMap;

/// The user a request without a known token is (the kubeconfig's administrator).
pub const ADMIN: &str = "kubernetes-admin";

/// The group RBAC lets do everything.
const MASTERS: &str = "system:masters";

/// What the test configured.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    /// Token → (username, groups).
    tokens: HashMap<String, (String, Vec<String>)>,
    /// What users may do.
    allowed: Vec<Access>,
    /// What no one may do: (verb, group, resource).
    denied: Vec<(String, String, String)>,
    /// Requests without a known token get 401.
    authenticate: bool,
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

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) groups: Vec<String>,
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

    pub(crate) fn deny(&mut self, verb: &str, group: &str, resource: &str) {
        self.denied
            .push((verb.to_owned(), group.to_owned(), resource.to_owned()));
    }

    pub(crate) fn set_authenticate(&mut self, on: bool) {
        self.authenticate = on;
    }

    /// The user a request's `Authorization` header names, or `None` when strict
    /// authentication refuses it.
    pub(crate) fn user(&self, authorization: Option<&str>) -> Option<User> {
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        match token.and_then(|t| self.tokens.get(t)) {
            Some((name, groups)) => Some(User {
                name: name.clone(),
                groups: groups.clone(),
            }),
            None if self.authenticate => None,
            None => Some(User {
                name: ADMIN.to_owned(),
                groups: vec![MASTERS.to_owned(), "system:authenticated".to_owned()],
            }),
        }
    }

    /// Whether `user` may `verb` the `resource` of `group` in `namespace` (empty: the
    /// cluster scope), or why not.
    pub(crate) fn authorize(
        &self,
        user: &User,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: &str,
    ) -> Result<(), String> {
        if self
            .denied
            .iter()
            .any(|(v, g, r)| v == verb && g == group && r == resource)
        {
            return Err(format!(
                "the fake's rules deny {verb} on {resource}.{group} to everyone"
            ));
        }
        if user.groups.iter().any(|g| g == MASTERS) {
            return Ok(());
        }
        let allowed = self.allowed.iter().any(|a| {
            a.user == user.name
                && a.verb == verb
                && a.group == group
                && a.resource == resource
                && a.namespace.as_deref().is_none_or(|ns| ns == namespace)
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "no rule allows {:?} to {verb} {resource}.{group} in namespace {namespace:?}",
                user.name
            ))
        }
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

    /// A SubjectAccessReview's answer (about `spec.user` in `spec.groups`), or, with
    /// `me`, a SelfSubjectAccessReview's (about the requester).
    pub(crate) fn access_review(
        &self,
        mut review: Value,
        me: Option<&User>,
    ) -> Result<Value, String> {
        let spec = &review["spec"];
        let user = match me {
            Some(me) => me.clone(),
            None => User {
                name: spec["user"]
                    .as_str()
                    .ok_or("spec.user: required")?
                    .to_owned(),
                groups: spec["groups"]
                    .as_array()
                    .map(|g| {
                        g.iter()
                            .filter_map(|g| Some(g.as_str()?.to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
        };
        let attrs = &spec["resourceAttributes"];
        if !attrs.is_object() {
            return Err(
                "spec.resourceAttributes: required (this fake checks resources only)".into(),
            );
        }
        let field = |name: &str| attrs[name].as_str().unwrap_or("").to_string();
        let answer = self.authorize(
            &user,
            &field("verb"),
            &field("group"),
            &field("resource"),
            &field("namespace"),
        );
        review["status"] = match answer {
            Ok(()) => json!({"allowed": true, "reason": "allowed by the fake's rules"}),
            Err(reason) => json!({"allowed": false, "reason": reason}),
        };
        Ok(review)
    }
}
