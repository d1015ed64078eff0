//! Applying a port's policy: the one place where a verdict becomes what the client
//! sees (for HTTP, the failure `errors::respond` answers), what is counted and what is
//! logged. The verdicts themselves are [`Policy`]'s.

use super::{HttpDecision, Meta, PortPolicy, Verdict};
use crate::{
    errors::{Decided, RouteNotFound, Unauthorized},
    metrics::{AuthzFamily, AuthzLabels, Metrics},
};
use http::Request;
use std::{net::SocketAddr, sync::Arc};

/// What was decided of one request or connection: for metrics, logs and tap.
#[derive(Clone, Debug)]
pub struct Decision {
    pub server: Meta,
    pub route: Option<Meta>,
    /// The authorization that allowed it.
    pub authz: Option<Meta>,
    pub outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
    /// Denied by the policy, let through because it audits.
    Audit,
    RouteNotFound,
    /// An open connection closed by a policy update.
    Terminate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Audit => "audit",
            Self::RouteNotFound => "route_not_found",
            Self::Terminate => "terminate",
        }
    }
}

/// Counts a decision: per request in the series the connection counted into last
/// (`PortPolicy::counters`), else in the registry.
fn count(
    metrics: &Metrics,
    family: AuthzFamily,
    d: &Decision,
    port: &PortPolicy,
    id: Option<&Arc<str>>,
    per_request: bool,
) {
    let labels = AuthzLabels {
        family,
        server: &d.server,
        port: port.port,
        route: d.route.as_ref(),
        authz: d.authz.as_ref(),
        client_id: id,
    };
    metrics.authz(labels, per_request.then(|| port.counters()));
}

/// Decides an inbound HTTP request under its port's current policy, counts and logs
/// the decision, and returns it with the failure to answer when the request must not
/// go on.
pub fn http<B>(
    metrics: &Metrics,
    port: &PortPolicy,
    client: SocketAddr,
    id: Option<&Arc<str>>,
    req: &Request<B>,
) -> (Decision, Option<Decided>) {
    let policy = port.current();
    let host = if policy.needs_host() {
        super::request_host(req)
    } else {
        None
    };
    let HttpDecision { route, verdict } = policy.check_http(
        port.client(client, id),
        host.as_deref(),
        req.method(),
        req.uri().path(),
        req.headers(),
    );
    let (outcome, family, authz) = match (route, verdict) {
        (None, _) => (Outcome::RouteNotFound, AuthzFamily::HttpRouteNotFound, None),
        (Some(_), Verdict::Allow(a)) => (Outcome::Allow, AuthzFamily::HttpAllow, Some(a.clone())),
        (Some(_), Verdict::Deny) => (Outcome::Deny, AuthzFamily::HttpDeny, None),
        (Some(_), Verdict::Audit) => (Outcome::Audit, AuthzFamily::HttpAudit, None),
    };
    let d = Decision {
        server: policy.server.clone(),
        route: route.cloned(),
        authz,
        outcome,
    };
    count(metrics, family, &d, port, id, true);
    let failed = match outcome {
        Outcome::Allow => None,
        Outcome::Audit => {
            tracing::info!(
                server = %d.server.display(),
                route = %route.map(Meta::display).unwrap_or_default(),
                %client,
                client_id = id.map(|i| &**i),
                "request allowed by audit: the policy would deny it"
            );
            None
        }
        Outcome::RouteNotFound => {
            tracing::info!(server = %d.server.display(), %client, path = req.uri().path(), "request denied: no route matches");
            Some(Decided::new(RouteNotFound {
                server: d.server.display(),
            }))
        }
        Outcome::Deny | Outcome::Terminate => {
            let route = route.map(Meta::display).unwrap_or_default();
            tracing::info!(
                server = %d.server.display(),
                %route,
                %client,
                client_id = id.map(|i| &**i),
                "request denied"
            );
            Some(Decided::new(Unauthorized {
                server: d.server.display(),
                route,
            }))
        }
    };
    (d, failed)
}

/// Decides a connection (opaque, or not HTTP) under `policy`: whether it may go on.
/// Counted and logged.
pub fn tcp(
    metrics: &Metrics,
    port: &PortPolicy,
    client: SocketAddr,
    id: Option<&Arc<str>>,
) -> bool {
    let policy = port.current();
    let verdict = policy.check_tcp(port.client(client, id));
    let (family, authz) = match verdict {
        Verdict::Allow(a) => (AuthzFamily::TcpAllow, Some(a.clone())),
        Verdict::Deny => (AuthzFamily::TcpDeny, None),
        Verdict::Audit => (AuthzFamily::TcpAudit, None),
    };
    let d = Decision {
        server: policy.server.clone(),
        route: None,
        authz,
        outcome: Outcome::Allow,
    };
    count(metrics, family, &d, port, id, false);
    match verdict {
        Verdict::Allow(_) => true,
        Verdict::Audit => {
            tracing::info!(server = %d.server.display(), %client, client_id = id.map(|i| &**i), "connection allowed by audit: the policy would deny it");
            true
        }
        Verdict::Deny => {
            tracing::info!(server = %d.server.display(), %client, client_id = id.map(|i| &**i), "connection denied");
            false
        }
    }
}

/// Resolves when a policy update no longer allows an open connection (counted and
/// logged); pending while each update still does.
pub(crate) async fn revoked(
    metrics: &Metrics,
    mut port: PortPolicy,
    client: SocketAddr,
    id: Option<&Arc<str>>,
) {
    loop {
        let policy = port.changed().await;
        let still = match policy.check_tcp(port.client(client, id)) {
            Verdict::Allow(_) | Verdict::Audit => true,
            Verdict::Deny => false,
        };
        if !still {
            let d = Decision {
                server: policy.server.clone(),
                route: None,
                authz: None,
                outcome: Outcome::Terminate,
            };
            count(metrics, AuthzFamily::TcpTerminate, &d, &port, id, false);
            tracing::info!(server = %d.server.display(), %client, client_id = id.map(|i| &**i), "connection closed: a policy update no longer allows it");
            return;
        }
    }
}
