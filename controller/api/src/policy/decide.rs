//! The inbound authorization decision: what `mesh.policy.InboundPolicies` says of one
//! port, compiled once into a form that is cheap to evaluate per connection and per
//! request, and the decision itself. The proxy enforces it per request; `mesh policy
//! check` runs the same code on the same message, so a dry run cannot disagree with
//! what the proxy would do.
//!
//! - **Compiled once**: networks become address ranges (IPv4 mapped into IPv6, so one
//!   comparison pair per range), exact identities a list (up to 4) or a hash set, routes' regexes compiled
//!   with `crate::path_regex`. A message that does not convert is refused whole
//!   ([`InvalidPolicy`]); the caller keeps the last good policy.
//! - **The decision** ([`Policy::check_tcp`], [`Policy::check_http`]) follows
//!   `policy.proto`: loopback is always allowed (authorization `localhost`) where it
//!   means the pod itself, that is in transparent mode; in explicit mode
//!   (`MESH_PROXY_INBOUND_FORWARD_ADDR`: VMs, `mesh demo`) every workload of the host
//!   connects from loopback, so there it is a client like any other. For HTTP
//!   the first route that matches decides, its own authorizations tried before the
//!   server-wide ones; routes exist but none matches: not found; an authorization
//!   matches when the client's address is in one of its networks and its
//!   authentication holds; nothing matches: denied, or under `Fallback::Audit` allowed
//!   and reported as the denial it would have been.
//! - **The explanation** ([`Policy::explain_http`], [`Policy::explain_tcp`]): the same
//!   decision, walked without its shortcuts, saying what was tried and why each route
//!   and authorization did or did not match; for the dry run, never on the proxy's hot
//!   path. A test holds both to the same verdict.
//! - **Inlined across the crate line**: the decision and its small helpers are
//!   `#[inline]`, so the proxy's per-request call compiles as it did when the code was
//!   the proxy's own, LTO or not (`cargo bench`'s release profile has none).
//! - **Defaults** ([`DefaultPolicy`](super::DefaultPolicy)): built by
//!   `DefaultPolicy::inbound_policy` as the controller builds them and compiled by the
//!   same code, so that a default and a controller's policy cannot differ in meaning.

#[cfg(test)]
mod tests;

use super as api;
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

/// A policy message the proxy cannot use, and what was wrong, by field path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidPolicy {
    pub field: String,
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl std::fmt::Display) -> InvalidPolicy {
    InvalidPolicy {
        field: field.into(),
        problem: problem.to_string(),
    }
}

/// Compiles each item of a message's list, the item at `{field}[i]` (the field path
/// its errors name); the first that fails is the whole list's error.
fn each<T, U>(
    list: &[T],
    field: &str,
    compile: impl Fn(&T, &str) -> Result<U, InvalidPolicy>,
) -> Result<Vec<U>, InvalidPolicy> {
    list.iter()
        .enumerate()
        .map(|(i, item)| compile(item, &format!("{field}[{i}]")))
        .collect()
}

/// An address range, IPv4 mapped into IPv6 (`::ffff:a.b.c.d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    lo: u128,
    hi: u128,
}

impl IpRange {
    /// The range of `ip/prefix_len`, or why it is not one.
    pub fn new(ip: IpAddr, prefix_len: u32) -> Result<Self, String> {
        let (bits, max) = match ip {
            IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        };
        if prefix_len > max {
            return Err(format!("prefix length {prefix_len} is over {max}"));
        }
        let host_bits = max - prefix_len;
        let mask = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        // An IPv4 range stays inside `::ffff:0:0/96`.
        let lo = bits & !mask;
        Ok(Self { lo, hi: lo | mask })
    }

    #[inline]
    fn contains(&self, ip: u128) -> bool {
        self.lo <= ip && ip <= self.hi
    }

    fn from_proto(net: Option<&api::IpNet>, field: &str) -> Result<Self, InvalidPolicy> {
        let net = net.ok_or_else(|| invalid(field, "missing"))?;
        let ip = net.ip.as_ref().ok_or_else(|| invalid(field, "no ip"))?;
        let ip = IpAddr::try_from(ip).map_err(|e| invalid(format!("{field}.ip"), e))?;
        Self::new(ip, net.prefix_len).map_err(|e| invalid(format!("{field}.prefix_len"), e))
    }
}

/// The one form addresses are compared in.
#[inline]
fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6),
        },
    }
}

#[derive(Debug)]
struct Network {
    net: IpRange,
    except: Vec<IpRange>,
}

/// Exact identities: compared one by one when there are few (most authorizations
/// name one or two), hashed when there are more.
#[derive(Debug)]
enum Identities {
    Few(Vec<Box<str>>),
    Many(HashSet<Box<str>>),
}

impl Identities {
    fn new(ids: &[String]) -> Self {
        if ids.len() <= 4 {
            Self::Few(ids.iter().map(|s| s.as_str().into()).collect())
        } else {
            Self::Many(ids.iter().map(|s| s.as_str().into()).collect())
        }
    }

    #[inline]
    fn contains(&self, id: &str) -> bool {
        match self {
            Self::Few(ids) => ids.iter().any(|i| **i == *id),
            Self::Many(ids) => ids.contains(id),
        }
    }
}

#[derive(Debug)]
enum Authentication {
    Unauthenticated,
    MeshTls {
        exact: Identities,
        /// Each with its leading `.`; `any`: the empty suffix was given.
        suffixes: Vec<Box<str>>,
        any: bool,
    },
}

/// Who made a policy, a route or an authorization: its `*_group`, `*_kind` and
/// `*_name` labels ([`MetaNames`], read through `Deref`). Shared: a decision names
/// its server, route and authorization for metrics and tap with one reference count
/// each, and two `Meta`s of one compiled policy compare by pointer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Meta(Arc<MetaNames>);

/// A [`Meta`]'s names.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MetaNames {
    pub group: Arc<str>,
    pub kind: Arc<str>,
    pub name: Arc<str>,
}

impl std::ops::Deref for Meta {
    type Target = MetaNames;

    #[inline]
    fn deref(&self) -> &MetaNames {
        &self.0
    }
}

impl Meta {
    fn from_proto(m: Option<&api::Meta>) -> Self {
        let m = m.cloned().unwrap_or_default();
        Self::new(&m.group, &m.kind, &m.name)
    }

    /// A `Meta` of these names.
    pub fn new(group: &str, kind: &str, name: &str) -> Self {
        Self(Arc::new(MetaNames {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
        }))
    }

    fn default_kind(name: &str) -> Self {
        Self::new("", "default", name)
    }

    /// As the policy API and tap say it.
    pub fn to_proto(&self) -> api::Meta {
        api::Meta {
            group: self.group.to_string(),
            kind: self.kind.to_string(),
            name: self.name.to_string(),
        }
    }

    /// `group/kind/name`, or `kind/name` without a group, as errors and logs say it.
    pub fn display(&self) -> String {
        if self.group.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.group, self.kind, self.name)
        }
    }

    pub fn render(&self, prefix: &str, out: &mut String) {
        for (key, value) in [
            ("group", &self.group),
            ("kind", &self.kind),
            ("name", &self.name),
        ] {
            if !out.is_empty() {
                out.push(',');
            }
            crate::prom::write_label(out, &format!("{prefix}_{key}"), value);
        }
    }
}

/// One compiled authorization.
#[derive(Debug)]
pub struct Authz {
    pub meta: Meta,
    networks: Vec<Network>,
    authentication: Authentication,
}

impl Authz {
    fn from_proto(a: &api::Authz, field: &str) -> Result<Self, InvalidPolicy> {
        if a.networks.is_empty() {
            return Err(invalid(
                format!("{field}.networks"),
                "an authorization needs at least one network",
            ));
        }
        let networks = each(&a.networks, &format!("{field}.networks"), |n, f| {
            Ok(Network {
                net: IpRange::from_proto(n.net.as_ref(), &format!("{f}.net"))?,
                except: each(&n.except, &format!("{f}.except"), |e, f| {
                    IpRange::from_proto(Some(e), f)
                })?,
            })
        })?;
        use api::authentication::Permit;
        let authentication = match a.authentication.as_ref().and_then(|a| a.permit.as_ref()) {
            None => return Err(invalid(format!("{field}.authentication"), "missing")),
            Some(Permit::Unauthenticated(_)) => Authentication::Unauthenticated,
            Some(Permit::MeshTls(m)) => Authentication::MeshTls {
                exact: Identities::new(&m.identities),
                any: m.suffixes.iter().any(String::is_empty),
                suffixes: m
                    .suffixes
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| format!(".{}", s.trim_start_matches('.')).into())
                    .collect(),
            },
        };
        Ok(Self {
            meta: Meta::from_proto(a.meta.as_ref()),
            networks,
            authentication,
        })
    }

    /// Whether a client at `ip` (as [`ip_bits`]) with mesh identity `id` meets it.
    #[inline]
    fn allows(&self, ip: u128, id: Option<&str>) -> bool {
        // Networks first: two comparisons each, where an identity costs a hash.
        self.networks
            .iter()
            .any(|n| n.net.contains(ip) && !n.except.iter().any(|e| e.contains(ip)))
            && self.allows_id(id)
    }
}

#[derive(Debug)]
enum PathMatch {
    Exact(Box<str>),
    /// Without a trailing `/` (but for `/` itself, which matches everything).
    Prefix(Box<str>),
    Regex(Regex),
}

impl PathMatch {
    #[inline]
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == &**p,
            Self::Prefix(p) => {
                p.is_empty()
                    || path
                        .strip_prefix(&**p)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            Self::Regex(re) => re.is_match(path),
        }
    }
}

#[derive(Debug)]
enum ValueMatch {
    Exact(Box<[u8]>),
    Regex(Regex),
}

#[derive(Debug)]
struct HttpMatch {
    path: Option<PathMatch>,
    method: Option<Method>,
    headers: Vec<(HeaderName, ValueMatch)>,
}

impl HttpMatch {
    fn from_proto(m: &api::HttpMatch, field: &str) -> Result<Self, InvalidPolicy> {
        use api::{header_match::Value, path_match::Kind};
        let regex = |p: &str, f: String| crate::path_regex::compile(p).map_err(|e| invalid(f, e));
        let path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
            None => None,
            Some(Kind::Exact(p)) => Some(PathMatch::Exact(p.as_str().into())),
            Some(Kind::Prefix(p)) => Some(PathMatch::Prefix(p.trim_end_matches('/').into())),
            Some(Kind::Regex(p)) => {
                Some(PathMatch::Regex(regex(p, format!("{field}.path.regex"))?))
            }
        };
        let method = match m.method.as_str() {
            "" => None,
            s => Some(Method::from_bytes(s.as_bytes()).map_err(|_| {
                invalid(format!("{field}.method"), format!("{s:?} is not a method"))
            })?),
        };
        let headers = each(&m.headers, &format!("{field}.headers"), |h, f| {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                invalid(
                    format!("{f}.name"),
                    format!("{:?} is not a header name", h.name),
                )
            })?;
            let value = match &h.value {
                None => return Err(invalid(format!("{f}.value"), "missing")),
                Some(Value::Exact(v)) => ValueMatch::Exact(v.as_bytes().into()),
                Some(Value::Regex(r)) => ValueMatch::Regex(regex(r, format!("{f}.regex"))?),
            };
            Ok((name, value))
        })?;
        Ok(Self {
            path,
            method,
            headers,
        })
    }

    #[inline]
    fn matches(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self.path.as_ref().is_none_or(|p| p.matches(path))
            && self.headers.iter().all(|(name, want)| {
                headers.get_all(name).iter().any(|v| match want {
                    ValueMatch::Exact(e) => v.as_bytes() == &**e,
                    ValueMatch::Regex(re) => v.to_str().is_ok_and(|v| re.is_match(v)),
                })
            })
    }
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub meta: Meta,
    /// The hosts it is for (Gateway API's `hostnames`); empty: any host.
    hosts: Vec<HostMatch>,
    matches: Vec<HttpMatch>,
    authorizations: Vec<Authz>,
}

/// One of a route's `hostnames`: a name, or `*.example.com` for any name ending in
/// `.example.com` (the wildcard covers one label or more, as Gateway API's does).
#[derive(Debug)]
enum HostMatch {
    Exact(Box<str>),
    /// The suffix, with its leading dot.
    Suffix(Box<str>),
}

impl HostMatch {
    fn from_proto(name: &str, field: &str) -> Result<Self, InvalidPolicy> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let (suffix, rest) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name.as_str()),
        };
        let valid = !rest.is_empty()
            && rest.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(invalid(
                field,
                format!("{name:?} is not a host name (or `*.` and one)"),
            ));
        }
        Ok(if suffix {
            Self::Suffix(format!(".{rest}").into())
        } else {
            Self::Exact(name.into())
        })
    }

    /// `host`: lower case, without its port.
    #[inline]
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host == &**name,
            Self::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(&**suffix),
        }
    }
}

/// A request's host as routes match it: its `:authority` (HTTP/2, or an absolute
/// HTTP/1 target) or its `Host` header, without the port, lower case and without a
/// trailing dot; `None` when it has neither.
pub fn request_host<B>(req: &http::Request<B>) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(a) => a.host().to_owned(),
        None => {
            let host = req.headers().get(http::header::HOST)?.to_str().ok()?;
            let host: http::uri::Authority = host.parse().ok()?;
            host.host().to_owned()
        }
    };
    Some(authority.trim_end_matches('.').to_ascii_lowercase())
}

/// The protocol a policy says the port speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Detect, as without a policy.
    Detect,
    Http1,
    Http2,
    Grpc,
    Opaque,
}

impl Protocol {
    /// Whether connections to the port are HTTP (forced, not detected).
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http1 | Self::Http2 | Self::Grpc)
    }
}

/// One port's compiled policy.
#[derive(Debug)]
pub struct Policy {
    pub server: Meta,
    pub protocol: Protocol,
    authorizations: Vec<Authz>,
    routes: Vec<Route>,
    audit: bool,
    /// Whether every client is allowed by the first server-wide authorization
    /// (`all-unauthenticated`, the default): then nothing else is looked at.
    open: Option<usize>,
    /// Whether a route names hosts: only then is a request's host read.
    hosts: bool,
}

/// The authorization that always lets loopback in.
static LOCALHOST: std::sync::LazyLock<Meta> =
    std::sync::LazyLock::new(|| Meta::default_kind("localhost"));
/// The route a request takes on a policy without routes.
static DEFAULT_ROUTE: std::sync::LazyLock<Meta> =
    std::sync::LazyLock::new(|| Meta::default_kind("default"));

/// Who is asking.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    pub ip: IpAddr,
    /// The mesh identity, for mesh TLS alone.
    pub id: Option<&'a str>,
    /// The client is the pod itself (loopback, in transparent mode): always allowed.
    pub local: bool,
}

/// What the policy says of one connection or request.
#[derive(Clone, Copy, Debug)]
pub enum Verdict<'a> {
    /// Allowed by this authorization.
    Allow(&'a Meta),
    /// No authorization allows it.
    Deny,
    /// No authorization allows it, but the policy audits: it goes on.
    Audit,
}

/// The decision on one HTTP request: its route and the verdict; `None` route: no route
/// matched while routes exist (404).
#[derive(Clone, Copy, Debug)]
pub struct HttpDecision<'a> {
    pub route: Option<&'a Meta>,
    pub verdict: Verdict<'a>,
}

impl Policy {
    /// Compiles a policy message, or says what in it is wrong.
    pub fn from_proto(p: &api::InboundPolicy) -> Result<Self, InvalidPolicy> {
        use api::protocol::Kind;
        let server = Meta::from_proto(p.server.as_ref());
        let protocol = match p.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
            None | Some(Kind::Detect(_)) => Protocol::Detect,
            Some(Kind::Http1(_)) => Protocol::Http1,
            Some(Kind::Http2(_)) => Protocol::Http2,
            Some(Kind::Grpc(_)) => Protocol::Grpc,
            Some(Kind::Opaque(_)) => Protocol::Opaque,
        };
        let authorizations = each(&p.authorizations, "authorizations", Authz::from_proto)?;
        let routes = each(&p.http_routes, "http_routes", |r, f| {
            Ok(Route {
                meta: Meta::from_proto(r.meta.as_ref()),
                hosts: each(&r.hostnames, &format!("{f}.hostnames"), |h, f| {
                    HostMatch::from_proto(h, f)
                })?,
                matches: each(&r.matches, &format!("{f}.matches"), HttpMatch::from_proto)?,
                authorizations: each(
                    &r.authorizations,
                    &format!("{f}.authorizations"),
                    Authz::from_proto,
                )?,
            })
        })?;
        let audit = match api::Fallback::try_from(p.fallback) {
            Ok(api::Fallback::Deny) => false,
            Ok(api::Fallback::Audit) => true,
            Err(_) => return Err(invalid("fallback", format!("unknown value {}", p.fallback))),
        };
        let everyone = IpRange::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).expect("::/0");
        let open = authorizations.first().is_some_and(|a| {
            matches!(a.authentication, Authentication::Unauthenticated)
                && a.networks
                    .iter()
                    .any(|n| n.net == everyone && n.except.is_empty())
        });
        Ok(Self {
            server,
            protocol,
            authorizations,
            open: (open && routes.is_empty()).then_some(0),
            hosts: routes.iter().any(|r| !r.hosts.is_empty()),
            routes,
            audit,
        })
    }

    /// Whether the decision reads the request's host (a route names hosts): when not,
    /// the caller need not find it ([`request_host`] allocates).
    #[inline]
    pub fn needs_host(&self) -> bool {
        self.hosts
    }

    #[inline]
    fn fallback(&self) -> Verdict<'_> {
        if self.audit {
            Verdict::Audit
        } else {
            Verdict::Deny
        }
    }

    #[inline]
    fn first<'a>(list: &'a [Authz], ip: u128, id: Option<&str>) -> Option<&'a Meta> {
        list.iter().find(|a| a.allows(ip, id)).map(|a| &a.meta)
    }

    /// The decision on a connection (opaque TCP, or a connection that is not HTTP):
    /// the server-wide authorizations alone.
    #[inline]
    pub fn check_tcp(&self, client: Client<'_>) -> Verdict<'_> {
        if let Some(i) = self.open {
            return Verdict::Allow(&self.authorizations[i].meta);
        }
        if client.local {
            return Verdict::Allow(&LOCALHOST);
        }
        match Self::first(&self.authorizations, ip_bits(client.ip), client.id) {
            Some(m) => Verdict::Allow(m),
            None => self.fallback(),
        }
    }

    /// The decision on one HTTP request.
    #[inline]
    pub fn check_http(
        &self,
        client: Client<'_>,
        host: Option<&str>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> HttpDecision<'_> {
        if let Some(i) = self.open {
            return HttpDecision {
                route: Some(&DEFAULT_ROUTE),
                verdict: Verdict::Allow(&self.authorizations[i].meta),
            };
        }
        let route = if self.routes.is_empty() {
            None
        } else {
            let found = self.routes.iter().find(|r| {
                (r.hosts.is_empty() || host.is_some_and(|h| r.hosts.iter().any(|m| m.matches(h))))
                    && (r.matches.is_empty()
                        || r.matches.iter().any(|m| m.matches(method, path, headers)))
            });
            match found {
                Some(r) => Some(r),
                None => {
                    return HttpDecision {
                        route: None,
                        verdict: self.fallback_not_found(),
                    }
                }
            }
        };
        let route_meta = Some(route.map_or(&*DEFAULT_ROUTE, |r| &r.meta));
        if client.local {
            return HttpDecision {
                route: route_meta,
                verdict: Verdict::Allow(&LOCALHOST),
            };
        }
        let (ip, id) = (ip_bits(client.ip), client.id);
        let found = route
            .and_then(|r| Self::first(&r.authorizations, ip, id))
            .or_else(|| Self::first(&self.authorizations, ip, id));
        HttpDecision {
            route: route_meta,
            verdict: found.map_or_else(|| self.fallback(), Verdict::Allow),
        }
    }

    /// A request no route matches is not found, whatever the fallback.
    #[inline]
    fn fallback_not_found(&self) -> Verdict<'_> {
        Verdict::Deny
    }
}

// === The explanation ===

/// What one authorization said of a client, for the dry run.
#[derive(Clone, Debug)]
pub struct AuthzTrial<'a> {
    pub meta: &'a Meta,
    /// The route it belongs to; `None`: server-wide.
    pub route: Option<&'a Meta>,
    /// `Err`: why the client's address is not in its networks.
    pub network: Result<(), String>,
    /// `Err`: why the client's authentication does not hold.
    pub authentication: Result<(), String>,
}

impl AuthzTrial<'_> {
    pub fn matched(&self) -> bool {
        self.network.is_ok() && self.authentication.is_ok()
    }
}

/// A route that did not match the request, and why.
#[derive(Clone, Debug)]
pub struct RouteMiss<'a> {
    pub meta: &'a Meta,
    pub reason: String,
}

/// The decision, with what was tried: [`Policy::explain_http`], [`Policy::explain_tcp`].
#[derive(Clone, Debug)]
pub struct Explanation<'a> {
    pub server: &'a Meta,
    /// As [`HttpDecision::route`]: `None` when routes exist and none matched (for
    /// TCP, always `None`).
    pub route: Option<&'a Meta>,
    pub verdict: Verdict<'a>,
    /// The routes tried before the one that matched, or all of them when none did.
    pub routes_missed: Vec<RouteMiss<'a>>,
    /// The authorizations tried in order (the route's, then the server's), up to the
    /// first that matched.
    pub tried: Vec<AuthzTrial<'a>>,
    /// Allowed as the pod itself (loopback in transparent mode).
    pub local: bool,
}

impl Authz {
    /// The walk of [`Authz::allows`], saying why each part fails.
    fn trial<'a>(&'a self, route: Option<&'a Meta>, client: Client<'_>) -> AuthzTrial<'a> {
        let ip = ip_bits(client.ip);
        let shown = client.ip.to_canonical();
        let network = if self
            .networks
            .iter()
            .any(|n| n.net.contains(ip) && !n.except.iter().any(|e| e.contains(ip)))
        {
            Ok(())
        } else if let Some((n, e)) = self.networks.iter().find_map(|n| {
            n.net
                .contains(ip)
                .then(|| n.except.iter().find(|e| e.contains(ip)).map(|e| (n, e)))
                .flatten()
        }) {
            Err(format!("client {shown} is in {e}, excepted from {}", n.net))
        } else {
            Err(format!(
                "client {shown} is not in {}",
                join(self.networks.iter().map(|n| n.net.to_string()))
            ))
        };
        let authentication = match &self.authentication {
            Authentication::Unauthenticated => Ok(()),
            Authentication::MeshTls { .. } if client.id.is_none() => {
                Err("not mesh TLS: the client has no mesh identity".to_owned())
            }
            auth @ Authentication::MeshTls { .. } if !self.allows_id(client.id) => {
                let id = client.id.unwrap_or_default();
                Err(format!(
                    "client identity `{id}` is not {}",
                    describe_identities(auth, " nor ")
                ))
            }
            Authentication::MeshTls { .. } => Ok(()),
        };
        AuthzTrial {
            meta: &self.meta,
            route,
            network,
            authentication,
        }
    }

    #[inline]
    fn allows_id(&self, id: Option<&str>) -> bool {
        match &self.authentication {
            Authentication::Unauthenticated => true,
            Authentication::MeshTls {
                exact,
                suffixes,
                any,
            } => id.is_some_and(|id| {
                *any || exact.contains(id) || suffixes.iter().any(|s| id.ends_with(&**s))
            }),
        }
    }

    /// What it allows, in words: `mesh TLS: web.demo.serviceaccount...`,
    /// `unauthenticated from 0.0.0.0/0, ::/0`, `any mesh identity in namespace demo`.
    pub fn describe(&self) -> String {
        let everywhere = self
            .networks
            .iter()
            .all(|n| n.except.is_empty() && n.net.is_all());
        let networks = join(self.networks.iter().map(|n| {
            let mut s = n.net.to_string();
            if !n.except.is_empty() {
                s.push_str(" except ");
                s.push_str(&join(n.except.iter().map(IpRange::to_string)));
            }
            s
        }));
        match &self.authentication {
            Authentication::Unauthenticated => format!("unauthenticated from {networks}"),
            auth => {
                let who = match auth {
                    Authentication::MeshTls { any: true, .. } => "any mesh identity".to_owned(),
                    Authentication::MeshTls {
                        exact, suffixes, ..
                    } if suffixes.is_empty() => format!("mesh TLS: {}", join(exact.iter())),
                    _ => describe_identities(auth, " or "),
                };
                if everywhere {
                    who
                } else {
                    format!("{who} from {networks}")
                }
            }
        }
    }
}

/// A mesh TLS authentication's identities, as `one of [..]` / `any mesh identity in
/// namespace NS`, the kinds of match joined by `joiner`.
fn describe_identities(auth: &Authentication, joiner: &str) -> String {
    let Authentication::MeshTls {
        exact,
        suffixes,
        any,
    } = auth
    else {
        return "unauthenticated".to_owned();
    };
    if *any {
        return "any mesh identity".to_owned();
    }
    let mut parts = Vec::new();
    if !exact.is_empty() {
        parts.push(format!("one of [{}]", join(exact.iter())));
    }
    for s in suffixes {
        let s = s.trim_start_matches('.');
        let ns = s.split_once('.').and_then(|(ns, rest)| {
            rest.strip_prefix(crate::names::IDENTITY_INFIX)
                .filter(|r| r.starts_with('.'))
                .map(|_| ns)
        });
        parts.push(match ns {
            Some(ns) => format!("any mesh identity in namespace {ns}"),
            None => format!("any mesh identity under *.{s}"),
        });
    }
    if parts.is_empty() {
        return "any of no identities".to_owned();
    }
    parts.join(joiner)
}

fn join<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    let mut out = String::new();
    for s in items {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(s.as_ref());
    }
    out
}

impl Identities {
    fn is_empty(&self) -> bool {
        match self {
            Self::Few(ids) => ids.is_empty(),
            Self::Many(ids) => ids.is_empty(),
        }
    }

    /// In a stable order, for words.
    fn iter(&self) -> impl Iterator<Item = &str> {
        let mut ids: Vec<&str> = match self {
            Self::Few(ids) => ids.iter().map(|s| &**s).collect(),
            Self::Many(ids) => ids.iter().map(|s| &**s).collect(),
        };
        if matches!(self, Self::Many(_)) {
            ids.sort_unstable();
        }
        ids.into_iter()
    }
}

impl IpRange {
    fn is_all(&self) -> bool {
        let v4 = u128::from(std::net::Ipv4Addr::UNSPECIFIED.to_ipv6_mapped());
        (self.lo == 0 && self.hi == u128::MAX) || (self.lo == v4 && self.hi == v4 | 0xffff_ffff)
    }
}

/// `10.0.0.0/8`, `::/0`: IPv4 ranges as IPv4.
impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host_bits = 128 - (self.hi - self.lo).leading_zeros();
        let ip = Ipv6Addr::from(self.lo);
        match ip.to_ipv4_mapped() {
            Some(v4) if host_bits <= 32 => write!(f, "{v4}/{}", 32 - host_bits),
            _ => write!(f, "{ip}/{}", 128 - host_bits),
        }
    }
}

impl PathMatch {
    fn describe(&self) -> String {
        match self {
            Self::Exact(p) => p.to_string(),
            Self::Prefix(p) => format!("{p}/*"),
            Self::Regex(re) => format!("~{}", re.as_str()),
        }
    }
}

impl HttpMatch {
    /// `GET /api/*`, `POST ~/vote.* content-type~json`.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = &self.method {
            parts.push(m.to_string());
        }
        if let Some(p) = &self.path {
            parts.push(p.describe());
        }
        for (name, value) in &self.headers {
            parts.push(match value {
                ValueMatch::Exact(v) => format!("{name}={}", String::from_utf8_lossy(v)),
                ValueMatch::Regex(re) => format!("{name}~{}", re.as_str()),
            });
        }
        if parts.is_empty() {
            "any request".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

impl Route {
    /// Its hosts and matches in short: `host shop.example.com: GET /api/* | /healthz`;
    /// `any request` without either.
    pub fn describe(&self) -> String {
        let matches = if self.matches.is_empty() {
            "any request".to_owned()
        } else {
            self.matches
                .iter()
                .map(HttpMatch::describe)
                .collect::<Vec<_>>()
                .join(" | ")
        };
        if self.hosts.is_empty() {
            matches
        } else {
            format!(
                "host {}: {matches}",
                join(self.hosts.iter().map(|h| h.describe()))
            )
        }
    }

    pub fn authorizations(&self) -> &[Authz] {
        &self.authorizations
    }

    /// Why a request does not match it, or `None` when it does.
    fn miss(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<String> {
        if !self.hosts.is_empty() && !host.is_some_and(|h| self.hosts.iter().any(|m| m.matches(h)))
        {
            let hosts = join(self.hosts.iter().map(|h| h.describe()));
            return Some(match host {
                Some(h) => format!("host `{h}` is not one of [{hosts}]"),
                None => format!("the request has no host; the route is for [{hosts}]"),
            });
        }
        if self.matches.is_empty()
            || self
                .matches
                .iter()
                .any(|m| m.matches(method, path, headers))
        {
            return None;
        }
        Some(format!(
            "{method} {path} matches none of: {}",
            self.describe()
        ))
    }
}

impl HostMatch {
    fn describe(&self) -> String {
        match self {
            Self::Exact(n) => n.to_string(),
            Self::Suffix(s) => format!("*{s}"),
        }
    }
}

impl Policy {
    /// The server-wide authorizations, in the order they are tried.
    pub fn authorizations(&self) -> &[Authz] {
        &self.authorizations
    }

    /// The routes, in the order they are tried.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Whether what no authorization allows is audited (allowed and reported) rather
    /// than denied.
    pub fn audits(&self) -> bool {
        self.audit
    }

    /// [`Policy::check_tcp`], saying what was tried.
    pub fn explain_tcp(&self, client: Client<'_>) -> Explanation<'_> {
        self.explain(client, None, Vec::new())
    }

    /// [`Policy::check_http`], saying what was tried.
    pub fn explain_http(
        &self,
        client: Client<'_>,
        host: Option<&str>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Explanation<'_> {
        let mut missed = Vec::new();
        let mut found = None;
        for r in &self.routes {
            match r.miss(host, method, path, headers) {
                Some(reason) => missed.push(RouteMiss {
                    meta: &r.meta,
                    reason,
                }),
                None => {
                    found = Some(r);
                    break;
                }
            }
        }
        if !self.routes.is_empty() && found.is_none() {
            return Explanation {
                server: &self.server,
                route: None,
                verdict: self.fallback_not_found(),
                routes_missed: missed,
                tried: Vec::new(),
                local: false,
            };
        }
        let mut e = self.explain(client, found, missed);
        e.route = Some(found.map_or(&*DEFAULT_ROUTE, |r| &r.meta));
        e
    }

    fn explain<'a>(
        &'a self,
        client: Client<'_>,
        route: Option<&'a Route>,
        routes_missed: Vec<RouteMiss<'a>>,
    ) -> Explanation<'a> {
        let mut e = Explanation {
            server: &self.server,
            route: None,
            verdict: self.fallback(),
            routes_missed,
            tried: Vec::new(),
            local: false,
        };
        if client.local {
            e.local = true;
            e.verdict = Verdict::Allow(&LOCALHOST);
            return e;
        }
        let route_authzs = route
            .into_iter()
            .flat_map(|r| r.authorizations.iter().map(move |a| (Some(&r.meta), a)));
        let server_authzs = self.authorizations.iter().map(|a| (None, a));
        for (r, a) in route_authzs.chain(server_authzs) {
            let t = a.trial(r, client);
            let matched = t.matched();
            e.tried.push(t);
            if matched {
                e.verdict = Verdict::Allow(&a.meta);
                break;
            }
        }
        e
    }
}
