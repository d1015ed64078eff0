//! Faults a test switches on and off, to show a client what a real API server does at
//! its worst moments: an outage (`503` to everything, open watches cut), a custom
//! resource whose CRD is not installed (its group unserved: `404` on discovery, lists
//! and watches), and a controller that RBAC does not allow to create TokenReviews
//! (`403`, the API server's words).
//!
//! The state is here; `http.rs` asks [`Faults::answer`] before routing a request, and
//! open watches ask [`Faults::cuts`] whenever the server's pulse changes.

use std::collections::HashSet;

use super::Kind;

/// What is broken now. The default is a healthy server.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    unavailable: bool,
    unserved: HashSet<Kind>,
    token_reviews_forbidden_for: Option<String>,
}

/// How a faulty server answers a request instead of serving it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `503 ServiceUnavailable`.
    Unavailable,
    /// `404 page not found`: the group is not served.
    NotFound,
    /// `403 Forbidden` for a TokenReview, naming the user RBAC refused.
    ForbiddenTokenReview(String),
    /// Serve it, but leave these groups out of the `/apis` group list.
    WithoutGroups(Vec<&'static str>),
}

impl Faults {
    pub(crate) fn set_unavailable(&mut self, unavailable: bool) {
        self.unavailable = unavailable;
    }

    pub(crate) fn set_served(&mut self, kind: Kind, served: bool) {
        match served {
            true => self.unserved.remove(&kind),
            false => self.unserved.insert(kind),
        };
    }

    pub(crate) fn forbid_token_reviews(&mut self, user: Option<&str>) {
        self.token_reviews_forbidden_for = user.map(str::to_string);
    }

    /// Whether an open watch of `kind` must end now (the outage, or its CRD gone: the
    /// API server closes such watches).
    pub(crate) fn cuts(&self, kind: Kind) -> bool {
        self.unavailable || self.unserved.contains(&kind)
    }

    /// How a request for `path` (with `post`: a POST) is answered, when a fault
    /// changes its answer.
    pub(crate) fn answer(&self, post: bool, path: &str) -> Option<Answer> {
        if self.unavailable {
            return Some(Answer::Unavailable);
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if post {
            let forbidden = segments == ["apis", "authentication.k8s.io", "v1", "tokenreviews"];
            return match (&self.token_reviews_forbidden_for, forbidden) {
                (Some(user), true) => Some(Answer::ForbiddenTokenReview(user.clone())),
                _ => None,
            };
        }
        let unserved_groups: Vec<&'static str> = self
            .unserved
            .iter()
            .map(|k| k.group())
            .filter(|g| !g.is_empty())
            .collect();
        match segments.as_slice() {
            ["apis"] if !unserved_groups.is_empty() => Some(Answer::WithoutGroups(unserved_groups)),
            ["apis", group, ..] if unserved_groups.contains(group) => Some(Answer::NotFound),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_server_changes_nothing() {
        let f = Faults::default();
        for path in [
            "/apis",
            "/apis/mesh.rs/v1alpha1/serviceprofiles",
            "/api/v1/pods",
        ] {
            assert_eq!(f.answer(false, path), None, "{path}");
        }
        assert_eq!(
            f.answer(true, "/apis/authentication.k8s.io/v1/tokenreviews"),
            None
        );
    }

    #[test]
    fn an_unserved_group_is_not_found_and_left_out_of_discovery() {
        let mut f = Faults::default();
        f.set_served(Kind::ServiceProfile, false);
        assert_eq!(
            f.answer(false, "/apis/mesh.rs/v1alpha1/serviceprofiles"),
            Some(Answer::NotFound)
        );
        assert_eq!(f.answer(false, "/apis/mesh.rs"), Some(Answer::NotFound));
        assert_eq!(
            f.answer(false, "/apis"),
            Some(Answer::WithoutGroups(vec!["mesh.rs"]))
        );
        assert_eq!(f.answer(false, "/api/v1/pods"), None);
        assert!(f.cuts(Kind::ServiceProfile) && !f.cuts(Kind::Pod));
        f.set_served(Kind::ServiceProfile, true);
        assert_eq!(f.answer(false, "/apis/mesh.rs"), None);
    }

    #[test]
    fn an_outage_answers_everything_and_cuts_every_watch() {
        let mut f = Faults::default();
        f.set_unavailable(true);
        assert_eq!(f.answer(false, "/version"), Some(Answer::Unavailable));
        assert_eq!(
            f.answer(true, "/apis/authentication.k8s.io/v1/tokenreviews"),
            Some(Answer::Unavailable)
        );
        assert!(f.cuts(Kind::Service));
    }

    #[test]
    fn forbidden_token_reviews_leave_other_posts_alone() {
        let mut f = Faults::default();
        f.forbid_token_reviews(Some("system:serviceaccount:mesh-system:mesh-controller"));
        assert_eq!(
            f.answer(true, "/apis/authentication.k8s.io/v1/tokenreviews"),
            Some(Answer::ForbiddenTokenReview(
                "system:serviceaccount:mesh-system:mesh-controller".into()
            ))
        );
        assert_eq!(
            f.answer(true, "/apis/authorization.k8s.io/v1/subjectaccessreviews"),
            None
        );
    }
}
