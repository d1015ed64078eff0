//! The authorization counters (`inbound_{http,tcp}_authz_*_total`,
//! `inbound_http_route_not_found_total`), with Linkerd's names and labels: the server
//! (`srv_group`, `srv_kind`, `srv_name`, `srv_port`), for HTTP the route
//! (`route_group`, `route_kind`, `route_name`), for an allow the authorization
//! (`authz_group`, `authz_kind`, `authz_name`), and the client's TLS (`tls`, with
//! mesh TLS `client_id`). Audit decisions (allowed only because the policy audits) are
//! counted apart, in `inbound_{http,tcp}_authz_audit_total`, with the deny's labels.
//!
//! Series are kept in the registry's cap (`MESH_PROXY_METRICS_MAX_SERIES`): past it,
//! decisions are counted in one `series_overflow="true"` series per family.
//!
//! Each series is a shared atomic counter. A connection remembers the last few it
//! counted into ([`AuthzRecent`]), so that most of its requests count with one atomic
//! add, under no global lock and with no hashing of the series' labels.

use super::{header, lock, push_label, push_tls, Direction};
use crate::{http::recent::Recent, policy::Meta};
use std::{
    collections::HashMap,
    fmt::Write,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
};

/// Which counter a decision goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthzFamily {
    HttpAllow,
    HttpDeny,
    HttpAudit,
    HttpRouteNotFound,
    TcpAllow,
    TcpDeny,
    TcpAudit,
    TcpTerminate,
}

impl AuthzFamily {
    pub const ALL: [AuthzFamily; 8] = [
        Self::HttpAllow,
        Self::HttpDeny,
        Self::HttpAudit,
        Self::HttpRouteNotFound,
        Self::TcpAllow,
        Self::TcpDeny,
        Self::TcpAudit,
        Self::TcpTerminate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::HttpAllow => "inbound_http_authz_allow_total",
            Self::HttpDeny => "inbound_http_authz_deny_total",
            Self::HttpAudit => "inbound_http_authz_audit_total",
            Self::HttpRouteNotFound => "inbound_http_route_not_found_total",
            Self::TcpAllow => "inbound_tcp_authz_allow_total",
            Self::TcpDeny => "inbound_tcp_authz_deny_total",
            Self::TcpAudit => "inbound_tcp_authz_audit_total",
            Self::TcpTerminate => "inbound_tcp_authz_terminate_total",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Self::HttpAllow => "Inbound HTTP requests allowed, by server, route and authorization.",
            Self::HttpDeny => "Inbound HTTP requests denied (403, gRPC PERMISSION_DENIED), by server and route.",
            Self::HttpAudit => "Inbound HTTP requests no authorization allowed, let through because the policy audits.",
            Self::HttpRouteNotFound => "Inbound HTTP requests no route of the server matched (404, gRPC NOT_FOUND).",
            Self::TcpAllow => "Inbound connections allowed, by server and authorization.",
            Self::TcpDeny => "Inbound connections refused before any byte reached the application, by server.",
            Self::TcpAudit => "Inbound connections no authorization allowed, let through because the policy audits.",
            Self::TcpTerminate => "Open inbound connections closed because a policy update no longer allowed them.",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One series' labels, unrendered: made per decision without allocating (clones of
/// shared strings).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuthzKey {
    pub family: AuthzFamily,
    pub server: Meta,
    pub port: u16,
    pub route: Option<Meta>,
    pub authz: Option<Meta>,
    pub client_id: Option<Arc<str>>,
}

/// A series' labels by reference: what a decision is counted under, before anything
/// is cloned (a connection's remembered series are compared with it).
#[derive(Clone, Copy, Debug)]
pub struct AuthzLabels<'a> {
    pub family: AuthzFamily,
    pub server: &'a Meta,
    pub port: u16,
    pub route: Option<&'a Meta>,
    pub authz: Option<&'a Meta>,
    pub client_id: Option<&'a Arc<str>>,
}

impl AuthzLabels<'_> {
    /// Whether `key` is this series. Strings compare by pointer first (`Arc`'s `Eq`),
    /// and a compiled policy's names are shared, so a remembered series costs a few
    /// pointer comparisons.
    fn is(&self, key: &AuthzKey) -> bool {
        key.family == self.family
            && key.port == self.port
            && key.server == *self.server
            && key.route.as_ref() == self.route
            && key.authz.as_ref() == self.authz
            && key.client_id.as_ref() == self.client_id
    }

    fn to_key(self) -> AuthzKey {
        AuthzKey {
            family: self.family,
            server: self.server.clone(),
            port: self.port,
            route: self.route.cloned(),
            authz: self.authz.cloned(),
            client_id: self.client_id.cloned(),
        }
    }
}

type Counter = Arc<AtomicU64>;

/// The series one connection counted into last.
#[derive(Default)]
pub struct AuthzRecent(Recent<AuthzKey, Counter>);

impl std::fmt::Debug for AuthzRecent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzRecent").finish_non_exhaustive()
    }
}

#[derive(Default)]
pub(crate) struct AuthzMetrics {
    /// Set when policy is on: the families are rendered only then.
    enabled: AtomicBool,
    series: Mutex<HashMap<AuthzKey, Counter>>,
    overflow: [Counter; AuthzFamily::ALL.len()],
}

impl AuthzMetrics {
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Relaxed);
    }

    /// Counts one decision, in the series `recent` remembers if it is one of them;
    /// `max` is the registry's series cap.
    pub(crate) fn count(&self, labels: AuthzLabels<'_>, recent: Option<&AuthzRecent>, max: usize) {
        let counter = match recent {
            Some(recent) => recent.0.get(
                |k| labels.is(k),
                || {
                    let key = labels.to_key();
                    (key.clone(), self.counter(key, max))
                },
            ),
            None => self.counter(labels.to_key(), max),
        };
        counter.fetch_add(1, Relaxed);
    }

    /// The series' counter, made if it is new and the cap allows, else the family's
    /// overflow.
    fn counter(&self, key: AuthzKey, max: usize) -> Counter {
        let mut series = lock(&self.series);
        if let Some(n) = series.get(&key) {
            return n.clone();
        }
        if series.len() >= max {
            return self.overflow[key.family.index()].clone();
        }
        series.entry(key).or_default().clone()
    }

    pub(crate) fn encode(&self, out: &mut String) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        let series: Vec<(AuthzKey, u64)> = lock(&self.series)
            .iter()
            .map(|(k, n)| (k.clone(), n.load(Relaxed)))
            .collect();
        for family in AuthzFamily::ALL {
            header(out, family.name(), "counter", family.help());
            for (key, n) in series.iter().filter(|(k, _)| k.family == family) {
                let mut labels = String::new();
                key.server.render("srv", &mut labels);
                push_label(&mut labels, "srv_port", &key.port.to_string());
                if let Some(r) = &key.route {
                    r.render("route", &mut labels);
                }
                if let Some(a) = &key.authz {
                    a.render("authz", &mut labels);
                }
                push_tls(&mut labels, Direction::Inbound, key.client_id.as_ref());
                let _ = writeln!(out, "{}{{{labels}}} {n}", family.name());
            }
            let overflow = self.overflow[family.index()].load(Relaxed);
            if overflow > 0 {
                let _ = writeln!(
                    out,
                    "{}{{series_overflow=\"true\"}} {overflow}",
                    family.name()
                );
            }
        }
    }
}
