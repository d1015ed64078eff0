//! What the CRDs' schemas cannot check, with every problem's field path
//! (`spec.requiredAuthenticationRefs[1].kind: ...`), and the valid documents turned
//! into the forms the index compiles ([`super::Resource`]).

use super::{spec::*, *};
use crate::profile::{Invalid, Problems};
use mesh_api::names::{is_dns_domain, is_dns_label, is_dns_name};
use mesh_api::policy as api;
use std::net::IpAddr;

/// Collects problems, each under its path.
#[derive(Default)]
struct Checker {
    problems: Vec<Invalid>,
}

impl Checker {
    fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Invalid {
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn finish<T>(self, value: T) -> Result<T, Problems> {
        match self.problems.is_empty() {
            true => Ok(value),
            false => Err(Problems(self.problems)),
        }
    }
}

/// The envelope every kind shares: apiVersion, kind, name and namespace.
fn check_envelope<S>(c: &mut Checker, object: &Object<S>, kind: Kind) -> Meta {
    if !object.api_version.is_empty() && object.api_version != API_VERSION {
        c.add(
            "apiVersion",
            format!("expected {API_VERSION:?}, found {:?}", object.api_version),
        );
    }
    if !object.kind.is_empty() && object.kind != kind.name() {
        c.add(
            "kind",
            format!("expected {:?}, found {:?}", kind.name(), object.kind),
        );
    }
    let m = &object.metadata;
    if m.name.is_empty() {
        c.add("metadata.name", "required");
    } else if !is_dns_domain(&m.name) {
        c.add(
            "metadata.name",
            format!(
                "{:?} is not a DNS-1123 subdomain (lowercase letters, digits, `-`, `.`)",
                m.name
            ),
        );
    }
    if let Some(ns) = &m.namespace {
        if !is_dns_label(ns) {
            c.add(
                "metadata.namespace",
                format!("{ns:?} is not a namespace name (a DNS-1123 label)"),
            );
        }
    }
    Meta {
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        created: m.creation_timestamp.clone().unwrap_or_default(),
    }
}

pub(super) fn server(object: &Object<ServerSpec>) -> Result<Server, Problems> {
    let mut c = Checker::default();
    let meta = check_envelope(&mut c, object, Kind::Server);
    let spec = &object.spec;
    match &spec.pod_selector {
        Some(s) => check_selector(&mut c, "spec.podSelector", s),
        None => c.add(
            "spec.podSelector",
            "required: the pods of this namespace the Server applies to (`{}` selects all)",
        ),
    }
    let port = match &spec.port {
        None => {
            c.add(
                "spec.port",
                "required: a port number or a container port's name",
            );
            PortRef::Number(0)
        }
        Some(IntOrString::Int(n)) => match u16::try_from(*n) {
            Ok(n) if n > 0 => PortRef::Number(n),
            _ => {
                c.add(
                    "spec.port",
                    format!("{n} is not a port: expected 1-65535 or a port name"),
                );
                PortRef::Number(0)
            }
        },
        Some(IntOrString::String(name)) => {
            if let Err(reason) = check_port_name(name) {
                c.add("spec.port", reason);
            }
            PortRef::Name(name.clone())
        }
    };
    let access_policy = match &spec.access_policy {
        None => DefaultPolicy::Deny,
        Some(name) => name.parse().unwrap_or_else(|reason: String| {
            c.add("spec.accessPolicy", reason);
            DefaultPolicy::Deny
        }),
    };
    c.finish(Server {
        meta,
        selector: spec.pod_selector.clone().unwrap_or_default(),
        port,
        protocol: spec.proxy_protocol,
        access_policy,
    })
}

fn check_selector(c: &mut Checker, path: &str, s: &LabelSelector) {
    for (key, value) in &s.match_labels {
        if let Err(reason) = check_label_key(key) {
            c.add(format!("{path}.matchLabels.{key}"), reason);
        }
        if !is_label_value(value) {
            c.add(
                format!("{path}.matchLabels.{key}"),
                format!("{value:?} is not a label value (at most 63 letters, digits, `-`, `_`, `.`, starting and ending alphanumeric)"),
            );
        }
    }
    for (i, e) in s.match_expressions.iter().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        if let Err(reason) = check_label_key(&e.key) {
            c.add(format!("{at}.key"), reason);
        }
        match e.operator {
            SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => c.add(
                format!("{at}.values"),
                format!(
                    "required (at least one value) with operator {:?}",
                    e.operator
                ),
            ),
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if !e.values.is_empty() => c
                .add(
                    format!("{at}.values"),
                    format!("must be empty with operator {:?}", e.operator),
                ),
            _ => {}
        }
    }
}

fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !is_dns_domain(p)) || !is_label_value(name) || name.is_empty() {
        return Err(format!(
            "{key:?} is not a label key (`[prefix/]name`, the prefix a DNS subdomain, the name at most 63 letters, digits, `-`, `_`, `.`)"
        ));
    }
    Ok(())
}

fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && v.ends_with(|ch: char| ch.is_ascii_alphanumeric()))
}

/// A container port's name (IANA_SVC_NAME): 1-15 lowercase letters, digits and `-`,
/// at least one letter, no `-` at either end or twice in a row.
fn check_port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    match ok {
        true => Ok(()),
        false => Err(format!(
            "{name:?} is neither a port number nor a port name (1-15 lowercase letters, digits and `-`, with a letter)"
        )),
    }
}

/// A reference's kind and group, compared as Linkerd does (case aside); a missing
/// group on one of our kinds is named as such, with the group to write.
fn which_kind(
    c: &mut Checker,
    path: &str,
    group: &str,
    kind: &str,
    allowed: &[(&str, &str)],
) -> Option<usize> {
    let found = allowed
        .iter()
        .position(|(g, k)| g.eq_ignore_ascii_case(group) && k.eq_ignore_ascii_case(kind));
    if found.is_some() {
        return found;
    }
    let list = allowed
        .iter()
        .map(|(g, k)| match g.is_empty() {
            true => format!("{k} (core group)"),
            false => format!("{k} ({g})"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    match allowed.iter().find(|(_, k)| k.eq_ignore_ascii_case(kind)) {
        Some(("", k)) => c.add(
            format!("{path}.group"),
            format!("{k} is in the core group: leave group empty, found {group:?}"),
        ),
        Some((g, k)) if group.is_empty() => c.add(
            format!("{path}.group"),
            format!("missing: an empty group means the core group, which has no {k}; write `group: {g}`"),
        ),
        Some((g, k)) => c.add(
            format!("{path}.group"),
            format!("{k} is in group {g}, found {group:?}"),
        ),
        None => c.add(
            format!("{path}.kind"),
            format!("unsupported kind {kind:?}: expected one of {list}"),
        ),
    }
    None
}

fn check_object_name(c: &mut Checker, path: &str, name: &str) {
    if !is_dns_domain(name) {
        c.add(
            path,
            format!("{name:?} is not an object name (a DNS-1123 subdomain)"),
        );
    }
}

fn check_ref_namespace(c: &mut Checker, path: &str, ns: &Option<String>) {
    if let Some(ns) = ns {
        if !is_dns_label(ns) {
            c.add(
                path,
                format!("{ns:?} is not a namespace name (a DNS-1123 label)"),
            );
        }
    }
}

pub(super) fn authorization_policy(
    object: &Object<AuthorizationPolicySpec>,
) -> Result<AuthorizationPolicy, Problems> {
    let mut c = Checker::default();
    let meta = check_envelope(&mut c, object, Kind::AuthorizationPolicy);
    let spec = &object.spec;
    let default_target = TargetRef::default();
    let t = spec.target_ref.as_ref().unwrap_or_else(|| {
        c.add(
            "spec.targetRef",
            "required: a Server, HTTPRoute (group policy.mesh.rs) or this Namespace",
        );
        &default_target
    });
    check_object_name(&mut c, "spec.targetRef.name", &t.name);
    let target = match (spec.target_ref.is_some())
        .then(|| {
            which_kind(
                &mut c,
                "spec.targetRef",
                &t.group,
                &t.kind,
                &[(GROUP, "Server"), ("", "Namespace"), (GROUP, "HTTPRoute")],
            )
        })
        .flatten()
    {
        Some(0) => Target::Server(t.name.clone()),
        Some(1) => {
            if let Some(ns) = &meta.namespace {
                if *ns != t.name {
                    c.add(
                        "spec.targetRef.name",
                        format!("a Namespace target must be the policy's own namespace {ns:?}, found {:?}", t.name),
                    );
                }
            }
            Target::Namespace
        }
        _ => Target::Route(t.name.clone()),
    };
    let mut identity = None;
    let mut network = None;
    if spec.required_authentication_refs.is_none() {
        c.add(
            "spec.requiredAuthenticationRefs",
            "required: the authentications a client must meet (`[]` allows every client from everywhere)",
        );
    }
    for (i, r) in spec
        .required_authentication_refs
        .iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.requiredAuthenticationRefs[{i}]");
        check_object_name(&mut c, &format!("{at}.name"), &r.name);
        check_ref_namespace(&mut c, &format!("{at}.namespace"), &r.namespace);
        let to = NamedRef {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        };
        let kind = which_kind(
            &mut c,
            &at,
            &r.group,
            &r.kind,
            &[
                (GROUP, Kind::MeshTlsAuthentication.name()),
                (GROUP, Kind::NetworkAuthentication.name()),
                ("", "ServiceAccount"),
            ],
        );
        match kind {
            Some(1) if network.is_some() => c.add(
                at,
                "a second NetworkAuthentication: at most one may be required (list its networks in one)",
            ),
            Some(1) => network = Some(to),
            Some(_) if identity.is_some() => c.add(
                at,
                format!(
                    "a second identity source ({}): at most one MeshTLSAuthentication or ServiceAccount may be required (list the identities in one MeshTLSAuthentication)",
                    r.kind
                ),
            ),
            Some(0) => identity = Some(IdentitySource::MeshTls(to)),
            Some(_) => identity = Some(IdentitySource::ServiceAccount(to)),
            None => {}
        }
    }
    c.finish(AuthorizationPolicy {
        meta,
        target,
        identity,
        network,
    })
}

pub(super) fn mesh_tls(
    object: &Object<MeshTlsAuthenticationSpec>,
) -> Result<MeshTlsAuthentication, Problems> {
    let mut c = Checker::default();
    let meta = check_envelope(&mut c, object, Kind::MeshTlsAuthentication);
    let spec = &object.spec;
    let mut identities = Vec::new();
    match (&spec.identities, &spec.identity_refs) {
        (Some(_), Some(_)) => c.add("spec", "set one of identities and identityRefs, not both"),
        (None, None) => c.add("spec", "set one of identities and identityRefs"),
        (Some(list), None) if list.is_empty() => {
            c.add("spec.identities", "at least one identity is required")
        }
        (None, Some(list)) if list.is_empty() => {
            c.add("spec.identityRefs", "at least one reference is required")
        }
        _ => {}
    }
    for (i, id) in spec.identities.iter().flatten().enumerate() {
        match parse_identity(id) {
            Ok(m) => identities.push(m),
            Err(reason) => c.add(format!("spec.identities[{i}]"), reason),
        }
    }
    for (i, r) in spec.identity_refs.iter().flatten().enumerate() {
        let at = format!("spec.identityRefs[{i}]");
        match which_kind(
            &mut c,
            &at,
            &r.group,
            &r.kind,
            &[("", "ServiceAccount"), ("", "Namespace")],
        ) {
            Some(0) => {
                if !is_dns_domain(&r.name) {
                    c.add(
                        format!("{at}.name"),
                        format!("{:?} is not a ServiceAccount name", r.name),
                    );
                }
                check_ref_namespace(&mut c, &format!("{at}.namespace"), &r.namespace);
                identities.push(IdentityMatch::ServiceAccount(NamedRef {
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                }));
            }
            Some(_) => {
                if !is_dns_label(&r.name) {
                    c.add(
                        format!("{at}.name"),
                        format!("{:?} is not a namespace name", r.name),
                    );
                }
                if r.namespace.is_some() {
                    c.add(
                        format!("{at}.namespace"),
                        "a Namespace reference has no namespace: name the namespace in `name`",
                    );
                }
                identities.push(IdentityMatch::Namespace(r.name.clone()));
            }
            None => {}
        }
    }
    c.finish(MeshTlsAuthentication { meta, identities })
}

/// An identity as MeshTLSAuthentication writes it: `*`, `*.<suffix>` or exact.
fn parse_identity(id: &str) -> Result<IdentityMatch, String> {
    if id == "*" {
        return Ok(IdentityMatch::Suffix(String::new()));
    }
    if let Some(suffix) = id.strip_prefix("*.") {
        if is_dns_name(suffix) && !suffix.contains('*') {
            return Ok(IdentityMatch::Suffix(suffix.to_string()));
        }
        return Err(format!(
            "{id:?}: after `*.` must come a DNS name, the suffix identities must end with"
        ));
    }
    if id.contains('*') {
        return Err(format!(
            "{id:?}: only a leading `*.` is a wildcard (`*` alone for any identity, `*.<suffix>`)"
        ));
    }
    if !is_dns_name(id) || id.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{id:?} is not an identity: expected `<sa>.<ns>.serviceaccount.identity.mesh.<trust-domain>`, `*` or `*.<suffix>`"
        ));
    }
    Ok(IdentityMatch::Exact(id.to_string()))
}

pub(super) fn network(
    object: &Object<NetworkAuthenticationSpec>,
) -> Result<NetworkAuthentication, Problems> {
    let mut c = Checker::default();
    let meta = check_envelope(&mut c, object, Kind::NetworkAuthentication);
    if object.spec.networks.is_empty() {
        c.add("spec.networks", "at least one network is required");
    }
    let mut networks = Vec::new();
    for (i, n) in object.spec.networks.iter().enumerate() {
        let at = format!("spec.networks[{i}]");
        let Some(net) = parse_cidr(&mut c, &format!("{at}.cidr"), &n.cidr) else {
            continue;
        };
        let mut except = Vec::new();
        for (j, e) in n.except.iter().enumerate() {
            let path = format!("{at}.except[{j}]");
            let Some(e) = parse_cidr(&mut c, &path, e) else {
                continue;
            };
            if !net.contains_net(&e) {
                c.add(path, format!("{e} is not inside cidr {net}"));
            } else if e.prefix_len <= net.prefix_len {
                c.add(
                    path,
                    format!("{e} covers all of cidr {net}, which then includes nothing"),
                );
            } else {
                except.push(e);
            }
        }
        networks.push(Network { net, except });
    }
    c.finish(NetworkAuthentication { meta, networks })
}

fn parse_cidr(c: &mut Checker, path: &str, text: &str) -> Option<Cidr> {
    match text.parse::<Cidr>() {
        Ok(n) => Some(n),
        Err(reason) => {
            c.add(path, reason);
            None
        }
    }
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

pub(super) fn http_route(object: &Object<HttpRouteSpec>) -> Result<HttpRoute, Problems> {
    let mut c = Checker::default();
    let meta = check_envelope(&mut c, object, Kind::HttpRoute);
    let spec = &object.spec;
    if spec.parent_refs.is_empty() {
        c.add(
            "spec.parentRefs",
            "at least one parent (a Server) is required",
        );
    }
    let mut parents = Vec::new();
    for (i, p) in spec.parent_refs.iter().enumerate() {
        let at = format!("spec.parentRefs[{i}]");
        let group = p.group.as_deref().unwrap_or(GROUP);
        let kind = p.kind.as_deref().unwrap_or("Server");
        if which_kind(&mut c, &at, group, kind, &[(GROUP, "Server")]).is_some() {
            parents.push(p.name.clone());
        }
        check_object_name(&mut c, &format!("{at}.name"), &p.name);
        match (&p.namespace, &meta.namespace) {
            (Some(ns), Some(own)) if ns != own => c.add(
                format!("{at}.namespace"),
                format!("a route's Server must be in the route's namespace {own:?}, found {ns:?}"),
            ),
            _ => check_ref_namespace(&mut c, &format!("{at}.namespace"), &p.namespace),
        }
        if p.port.is_some() {
            c.add(
                format!("{at}.port"),
                "not supported on a Server parent (the Server names its port)",
            );
        }
        if p.section_name.is_some() {
            c.add(
                format!("{at}.sectionName"),
                "not supported on a Server parent",
            );
        }
    }
    for (i, h) in spec.hostnames.iter().enumerate() {
        let name = h.strip_prefix("*.").unwrap_or(h);
        if !is_dns_name(name) || name.contains('*') || name.parse::<IpAddr>().is_ok() {
            c.add(
                format!("spec.hostnames[{i}]"),
                format!(
                    "{h:?} is not a hostname (a DNS name, or `*.` and one; no IP address, no port)"
                ),
            );
        }
    }
    let mut matches = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        if rule.matches.is_empty() {
            matches.push(api::HttpMatch::default());
        }
        for (j, m) in rule.matches.iter().enumerate() {
            let at = format!("spec.rules[{i}].matches[{j}]");
            matches.push(http_match(&mut c, &at, m));
        }
    }
    c.finish(HttpRoute {
        meta,
        parents,
        hostnames: spec
            .hostnames
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        matches,
    })
}

fn http_match(c: &mut Checker, at: &str, m: &HttpRouteMatch) -> api::HttpMatch {
    use api::path_match::Kind as P;
    let path = m.path.as_ref().map(|p| {
        let path = format!("{at}.path.value");
        match p.kind {
            PathMatchType::Exact | PathMatchType::PathPrefix if !p.value.starts_with('/') => {
                c.add(path, format!("{:?} does not start with `/`", p.value))
            }
            PathMatchType::RegularExpression => {
                if let Err(e) = mesh_api::path_regex::compile(&p.value) {
                    c.add(path, e.to_string());
                }
            }
            _ => {}
        }
        api::PathMatch {
            kind: Some(match p.kind {
                PathMatchType::Exact => P::Exact(p.value.clone()),
                PathMatchType::PathPrefix => P::Prefix(p.value.clone()),
                PathMatchType::RegularExpression => P::Regex(p.value.clone()),
            }),
        }
    });
    let method = m.method.clone().unwrap_or_default();
    if m.method.is_some() && !METHODS.contains(&method.as_str()) {
        c.add(
            format!("{at}.method"),
            format!("{method:?} is not one of {}", METHODS.join(", ")),
        );
    }
    let mut headers = Vec::new();
    for (k, h) in m.headers.iter().enumerate() {
        let hat = format!("{at}.headers[{k}]");
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            c.add(
                format!("{hat}.name"),
                format!("{:?} is not a header name", h.name),
            );
        }
        use api::header_match::Value as V;
        let value = match h.kind {
            HeaderMatchType::Exact => {
                if http::HeaderValue::from_str(&h.value).is_err() {
                    c.add(
                        format!("{hat}.value"),
                        format!("{:?} is not a header value", h.value),
                    );
                }
                V::Exact(h.value.clone())
            }
            HeaderMatchType::RegularExpression => {
                if let Err(e) = mesh_api::path_regex::compile(&h.value) {
                    c.add(format!("{hat}.value"), e.to_string());
                }
                V::Regex(h.value.clone())
            }
        };
        headers.push(api::HeaderMatch {
            name: h.name.to_ascii_lowercase(),
            value: Some(value),
        });
    }
    api::HttpMatch {
        path,
        method,
        headers,
    }
}
