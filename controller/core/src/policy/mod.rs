//! Authorization policy (`policy.mesh.rs/v1alpha1`): the kinds `Server`,
//! `AuthorizationPolicy`, `MeshTLSAuthentication`, `NetworkAuthentication` and
//! `HTTPRoute` as users write them ([`spec`]); what their schemas cannot check, with
//! every problem's field path ([`validate`]); the default inbound policies
//! ([`DefaultPolicy`]); and the [`index`] that compiles them, with the pods, into each
//! pod port's `mesh_api::policy::InboundPolicy`.
//!
//! Pure, as `profile` is: `mesh policy validate`, the admission webhook and the
//! backends all read documents through [`parse_yaml`] / [`validate_value`], so what one
//! accepts, all accept. Kinds and groups of references compare as Linkerd's do (case
//! aside); an empty group is the core group, and a missing group on one of our kinds is
//! refused saying which group to write.

pub mod answer;
pub mod index;
pub mod spec;
mod validate;

use crate::profile;
pub use crate::profile::{Invalid, Problems};
use mesh_api::policy as api;
use spec::{LabelSelector, Object, ProxyProtocol};
use std::fmt;

pub const GROUP: &str = "policy.mesh.rs";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "policy.mesh.rs/v1alpha1";

/// The policy kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Server,
    AuthorizationPolicy,
    MeshTlsAuthentication,
    NetworkAuthentication,
    HttpRoute,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Server,
        Kind::AuthorizationPolicy,
        Kind::MeshTlsAuthentication,
        Kind::NetworkAuthentication,
        Kind::HttpRoute,
    ];

    /// The kind as documents write it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Server => "Server",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::MeshTlsAuthentication => "MeshTLSAuthentication",
            Kind::NetworkAuthentication => "NetworkAuthentication",
            Kind::HttpRoute => "HTTPRoute",
        }
    }

    /// The resource's plural, as RBAC and the webhook's rules name it.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Server => "servers",
            Kind::AuthorizationPolicy => "authorizationpolicies",
            Kind::MeshTlsAuthentication => "meshtlsauthentications",
            Kind::NetworkAuthentication => "networkauthentications",
            Kind::HttpRoute => "httproutes",
        }
    }

    /// The kind `Meta.kind` carries in compiled policies (lower case, as Linkerd's).
    pub fn meta_kind(self) -> String {
        self.name().to_ascii_lowercase()
    }

    pub fn from_name(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == kind)
    }
}

pub use mesh_api::policy::{
    any_identity, default_meta, unauthenticated, Cidr, DefaultPolicy, DEFAULT_CLUSTER_NETWORKS,
};

/// A comma-separated list of networks (a flag's value).
pub fn parse_networks(list: &str) -> Result<Vec<Cidr>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// Where a resource is and when it was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// `None` in a document that does not say (`mesh policy validate`).
    pub namespace: Option<String>,
    pub name: String,
    /// RFC 3339, empty when unknown.
    pub created: String,
}

/// A valid document of any policy kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    Server(Server),
    AuthorizationPolicy(AuthorizationPolicy),
    MeshTlsAuthentication(MeshTlsAuthentication),
    NetworkAuthentication(NetworkAuthentication),
    HttpRoute(HttpRoute),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Server(_) => Kind::Server,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::MeshTlsAuthentication(_) => Kind::MeshTlsAuthentication,
            Resource::NetworkAuthentication(_) => Kind::NetworkAuthentication,
            Resource::HttpRoute(_) => Kind::HttpRoute,
        }
    }

    pub fn meta(&self) -> &Meta {
        match self {
            Resource::Server(r) => &r.meta,
            Resource::AuthorizationPolicy(r) => &r.meta,
            Resource::MeshTlsAuthentication(r) => &r.meta,
            Resource::NetworkAuthentication(r) => &r.meta,
            Resource::HttpRoute(r) => &r.meta,
        }
    }

    pub fn meta_mut(&mut self) -> &mut Meta {
        match self {
            Resource::Server(r) => &mut r.meta,
            Resource::AuthorizationPolicy(r) => &mut r.meta,
            Resource::MeshTlsAuthentication(r) => &mut r.meta,
            Resource::NetworkAuthentication(r) => &mut r.meta,
            Resource::HttpRoute(r) => &mut r.meta,
        }
    }
}

/// A valid `Server`.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    pub meta: Meta,
    pub selector: LabelSelector,
    pub port: PortRef,
    pub protocol: ProxyProtocol,
    pub access_policy: DefaultPolicy,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// Whether `selector` selects an object with these labels (matchLabels and every
/// expression; an empty selector selects everything).
pub fn selects(
    selector: &LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    use spec::SelectorOperator as Op;
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|e| {
            let value = labels.get(&e.key);
            match e.operator {
                Op::In => value.is_some_and(|v| e.values.contains(v)),
                Op::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
}

/// A valid `AuthorizationPolicy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    pub meta: Meta,
    pub target: Target,
    pub identity: Option<IdentitySource>,
    pub network: Option<NamedRef>,
}

/// In the policy's own namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Server(String),
    /// Every Server of the policy's namespace.
    Namespace,
    Route(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IdentitySource {
    MeshTls(NamedRef),
    ServiceAccount(NamedRef),
}

/// A reference by name; `namespace: None` is the referrer's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedRef {
    pub namespace: Option<String>,
    pub name: String,
}

impl NamedRef {
    /// The namespace this reference points into, from a referrer in `own`.
    pub fn namespace_in<'a>(&'a self, own: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(own)
    }
}

/// A valid `MeshTLSAuthentication`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshTlsAuthentication {
    pub meta: Meta,
    pub identities: Vec<IdentityMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityMatch {
    Exact(String),
    /// Identities ending in `.` + this; empty: every identity.
    Suffix(String),
    ServiceAccount(NamedRef),
    /// Every ServiceAccount of the namespace.
    Namespace(String),
}

impl IdentityMatch {
    /// Into `MeshTls`' exact identities and suffixes, in `trust_domain`, for an object
    /// in namespace `own`.
    pub fn add_to(&self, own: &str, trust_domain: &str, tls: &mut api::authentication::MeshTls) {
        match self {
            IdentityMatch::Exact(id) => tls.identities.push(id.clone()),
            IdentityMatch::Suffix(s) => tls.suffixes.push(s.clone()),
            IdentityMatch::ServiceAccount(r) => tls.identities.push(
                mesh_api::names::ServiceAccount::new(r.namespace_in(own), &r.name)
                    .identity(trust_domain),
            ),
            IdentityMatch::Namespace(ns) => tls.suffixes.push(format!(
                "{ns}{}",
                mesh_api::names::identity_suffix(trust_domain)
            )),
        }
    }
}

/// A valid `NetworkAuthentication`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkAuthentication {
    pub meta: Meta,
    pub networks: Vec<Network>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub net: Cidr,
    pub except: Vec<Cidr>,
}

impl Network {
    pub fn to_api(&self) -> api::Network {
        api::Network {
            net: Some(self.net.to_ipnet()),
            except: self.except.iter().map(|e| e.to_ipnet()).collect(),
        }
    }
}

/// A valid `HTTPRoute`.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRoute {
    pub meta: Meta,
    /// The Servers (of the route's namespace) it is part of.
    pub parents: Vec<String>,
    /// Lower case; empty: any host.
    pub hostnames: Vec<String>,
    /// Any matches; empty: every request.
    pub matches: Vec<api::HttpMatch>,
}

/// The envelope read first, to know which kind a document is.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

fn kind_of(api_version: &str, kind: &str) -> Result<Kind, Problems> {
    let one = |path: &str, reason: String| {
        Err(Problems(vec![Invalid {
            path: path.into(),
            reason,
        }]))
    };
    if api_version != API_VERSION {
        let hint = match api_version.split_once('/') {
            Some(("policy.linkerd.io" | "gateway.networking.k8s.io", _)) => {
                " (a Linkerd or Gateway API policy moves by changing its apiVersion)"
            }
            _ => "",
        };
        return one(
            "apiVersion",
            format!("expected {API_VERSION:?}, found {api_version:?}{hint}"),
        );
    }
    Kind::from_name(kind).map_or_else(
        || {
            let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            one(
                "kind",
                format!(
                    "{kind:?} is not a policy kind: expected one of {}",
                    kinds.join(", ")
                ),
            )
        },
        Ok,
    )
}

/// Parses one YAML document of any policy kind and validates it, naming every
/// problem with its field path (and the first decoding problem with its line).
pub fn parse_yaml(text: &str) -> Result<Resource, Problems> {
    let head: Head = crate::yaml::from_str(text).map_err(|e| {
        Problems(vec![Invalid {
            path: "(document)".into(),
            reason: e.to_string(),
        }])
    })?;
    match kind_of(&head.api_version, &head.kind)? {
        Kind::Server => profile::parse_yaml_as(text, |o| validate::server(o).map(Resource::Server)),
        Kind::AuthorizationPolicy => profile::parse_yaml_as(text, |o| {
            validate::authorization_policy(o).map(Resource::AuthorizationPolicy)
        }),
        Kind::MeshTlsAuthentication => profile::parse_yaml_as(text, |o| {
            validate::mesh_tls(o).map(Resource::MeshTlsAuthentication)
        }),
        Kind::NetworkAuthentication => profile::parse_yaml_as(text, |o| {
            validate::network(o).map(Resource::NetworkAuthentication)
        }),
        Kind::HttpRoute => {
            profile::parse_yaml_as(text, |o| validate::http_route(o).map(Resource::HttpRoute))
        }
    }
}

/// Decodes and validates a whole object given as JSON (an admission request's
/// `object`, or what the kubernetes backend lists), every problem named.
pub fn validate_value(object: serde_json::Value) -> Result<Resource, Problems> {
    let field = |k: &str| {
        object
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    match kind_of(&field("apiVersion"), &field("kind"))? {
        Kind::Server => profile::decode_value_as(object, |o: &Object<_>| {
            validate::server(o).map(Resource::Server)
        }),
        Kind::AuthorizationPolicy => profile::decode_value_as(object, |o: &Object<_>| {
            validate::authorization_policy(o).map(Resource::AuthorizationPolicy)
        }),
        Kind::MeshTlsAuthentication => profile::decode_value_as(object, |o: &Object<_>| {
            validate::mesh_tls(o).map(Resource::MeshTlsAuthentication)
        }),
        Kind::NetworkAuthentication => profile::decode_value_as(object, |o: &Object<_>| {
            validate::network(o).map(Resource::NetworkAuthentication)
        }),
        Kind::HttpRoute => profile::decode_value_as(object, |o: &Object<_>| {
            validate::http_route(o).map(Resource::HttpRoute)
        }),
    }
}

#[cfg(test)]
mod tests;
