//! The controller's `/api/policy` answer, one shape for both ends: the controller
//! writes it, `mesh authz` and `mesh policy check` read it.
//!
//! Each pod port's compiled `InboundPolicy` travels as JSON ([`PolicyJson`]) and
//! converts back into the very message a proxy would receive ([`PolicyJson::to_proto`]),
//! so the CLI runs the proxy's decision (`mesh_api::policy::decide`) on what the proxy
//! is sent, not on a second reading of the resources.

use mesh_api::policy as api;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, net::IpAddr};

/// `/api/policy?namespace=NS&resource=TYPE/NAME[&port=P]...`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadPolicy {
    pub namespace: String,
    /// As asked: `deploy/web`.
    pub resource: String,
    pub pods: Vec<PodPolicy>,
    /// What the policy index set aside in the namespace, and why.
    pub diagnostics: Vec<Diagnostic>,
}

/// One pod: who it is as a client, and its ports' policies as a server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PodPolicy {
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub service_account: String,
    /// Its mesh identity; `None` when the pod has no proxy.
    pub identity: Option<String>,
    /// Named container ports: name → numbers.
    pub named_ports: BTreeMap<String, Vec<u16>>,
    /// The ports Servers select, its container and probe ports, its endpoints' ports
    /// and those asked for, in order; empty when the policy index does not know the pod.
    pub ports: Vec<PortPolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortPolicy {
    pub port: u16,
    pub policy: PolicyJson,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub kind: String,
    pub name: String,
    pub reason: String,
}

impl From<&super::index::Diagnostic> for Diagnostic {
    fn from(d: &super::index::Diagnostic) -> Self {
        Self {
            kind: d.kind.to_string(),
            name: d.name.clone(),
            reason: d.reason.clone(),
        }
    }
}

/// `mesh.policy.InboundPolicy` as JSON: networks as `ip/len` strings, enums as names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyJson {
    pub server: Meta,
    /// `detect`, `http1`, `http2`, `grpc` or `opaque`.
    pub protocol: String,
    pub authorizations: Vec<Authz>,
    pub http_routes: Vec<HttpRoute>,
    /// `deny` or `audit`.
    pub fallback: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub group: String,
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authz {
    pub meta: Meta,
    pub networks: Vec<Network>,
    pub authentication: Authentication,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub net: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Authentication {
    Unauthenticated,
    MeshTls {
        identities: Vec<String>,
        suffixes: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRoute {
    pub meta: Meta,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    pub matches: Vec<HttpMatch>,
    pub authorizations: Vec<Authz>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(flatten)]
    pub value: HeaderValue,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderValue {
    Exact(String),
    Regex(String),
}

// === To JSON ===

impl From<&api::InboundPolicy> for PolicyJson {
    fn from(p: &api::InboundPolicy) -> Self {
        use api::protocol::Kind;
        let protocol = match p.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
            None | Some(Kind::Detect(_)) => "detect",
            Some(Kind::Http1(_)) => "http1",
            Some(Kind::Http2(_)) => "http2",
            Some(Kind::Grpc(_)) => "grpc",
            Some(Kind::Opaque(_)) => "opaque",
        };
        Self {
            server: p.server.as_ref().into(),
            protocol: protocol.into(),
            authorizations: p.authorizations.iter().map(Authz::from).collect(),
            http_routes: p
                .http_routes
                .iter()
                .map(|r| HttpRoute {
                    meta: r.meta.as_ref().into(),
                    hostnames: r.hostnames.clone(),
                    matches: r.matches.iter().map(HttpMatch::from).collect(),
                    authorizations: r.authorizations.iter().map(Authz::from).collect(),
                })
                .collect(),
            fallback: match api::Fallback::try_from(p.fallback) {
                Ok(api::Fallback::Audit) => "audit".into(),
                Ok(api::Fallback::Deny) => "deny".into(),
                Err(_) => p.fallback.to_string(),
            },
        }
    }
}

impl From<Option<&api::Meta>> for Meta {
    fn from(m: Option<&api::Meta>) -> Self {
        let m = m.cloned().unwrap_or_default();
        Self {
            group: m.group,
            kind: m.kind,
            name: m.name,
        }
    }
}

fn net_string(n: Option<&api::IpNet>) -> String {
    let ip = n
        .and_then(|n| n.ip.as_ref())
        .and_then(|ip| IpAddr::try_from(ip).ok());
    match (ip, n) {
        (Some(ip), Some(n)) => format!("{ip}/{}", n.prefix_len),
        _ => "invalid".into(),
    }
}

impl From<&api::Authz> for Authz {
    fn from(a: &api::Authz) -> Self {
        use api::authentication::Permit;
        Self {
            meta: a.meta.as_ref().into(),
            networks: a
                .networks
                .iter()
                .map(|n| Network {
                    net: net_string(n.net.as_ref()),
                    except: n.except.iter().map(|e| net_string(Some(e))).collect(),
                })
                .collect(),
            authentication: match a.authentication.as_ref().and_then(|a| a.permit.as_ref()) {
                Some(Permit::MeshTls(m)) => Authentication::MeshTls {
                    identities: m.identities.clone(),
                    suffixes: m.suffixes.clone(),
                },
                // A missing authentication does not compile either way; the controller
                // never sends one.
                Some(Permit::Unauthenticated(_)) | None => Authentication::Unauthenticated,
            },
        }
    }
}

impl From<&api::HttpMatch> for HttpMatch {
    fn from(m: &api::HttpMatch) -> Self {
        use api::{header_match::Value, path_match::Kind};
        Self {
            path: m
                .path
                .as_ref()
                .and_then(|p| p.kind.as_ref())
                .map(|k| match k {
                    Kind::Exact(p) => PathMatch::Exact(p.clone()),
                    Kind::Prefix(p) => PathMatch::Prefix(p.clone()),
                    Kind::Regex(p) => PathMatch::Regex(p.clone()),
                }),
            method: m.method.clone(),
            headers: m
                .headers
                .iter()
                .map(|h| HeaderMatch {
                    name: h.name.clone(),
                    value: match &h.value {
                        Some(Value::Regex(r)) => HeaderValue::Regex(r.clone()),
                        Some(Value::Exact(v)) => HeaderValue::Exact(v.clone()),
                        None => HeaderValue::Exact(String::new()),
                    },
                })
                .collect(),
        }
    }
}

// === Back to the message ===

impl PolicyJson {
    /// The message the proxy is sent, or what in the JSON is wrong (field path and
    /// reason).
    pub fn to_proto(&self) -> Result<api::InboundPolicy, String> {
        use api::protocol::Kind;
        let protocol = match self.protocol.as_str() {
            "detect" => Kind::Detect(Default::default()),
            "http1" => Kind::Http1(Default::default()),
            "http2" => Kind::Http2(Default::default()),
            "grpc" => Kind::Grpc(Default::default()),
            "opaque" => Kind::Opaque(Default::default()),
            p => return Err(format!("protocol: unknown protocol {p:?}")),
        };
        let fallback = match self.fallback.as_str() {
            "deny" => api::Fallback::Deny,
            "audit" => api::Fallback::Audit,
            f => return Err(format!("fallback: unknown fallback {f:?}")),
        };
        Ok(api::InboundPolicy {
            server: Some(self.server.to_proto()),
            protocol: Some(api::Protocol {
                kind: Some(protocol),
            }),
            authorizations: authzs(&self.authorizations, "authorizations")?,
            http_routes: self
                .http_routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    Ok(api::HttpRoute {
                        meta: Some(r.meta.to_proto()),
                        matches: r.matches.iter().map(HttpMatch::to_proto).collect(),
                        authorizations: authzs(
                            &r.authorizations,
                            &format!("http_routes[{i}].authorizations"),
                        )?,
                        hostnames: r.hostnames.clone(),
                    })
                })
                .collect::<Result<_, String>>()?,
            fallback: fallback as i32,
        })
    }
}

impl Meta {
    fn to_proto(&self) -> api::Meta {
        api::Meta {
            group: self.group.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
        }
    }
}

fn ipnet(s: &str, field: &str) -> Result<api::IpNet, String> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{field}: {s:?} is not ip/prefix_len"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{field}: {ip:?} is not an IP address"))?;
    let prefix_len = len
        .parse()
        .map_err(|_| format!("{field}: {len:?} is not a prefix length"))?;
    Ok(api::IpNet {
        ip: Some(ip.into()),
        prefix_len,
    })
}

fn authzs(list: &[Authz], field: &str) -> Result<Vec<api::Authz>, String> {
    use api::authentication::{MeshTls, Permit};
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let f = format!("{field}[{i}].networks");
            Ok(api::Authz {
                meta: Some(a.meta.to_proto()),
                networks: a
                    .networks
                    .iter()
                    .enumerate()
                    .map(|(j, n)| {
                        Ok(api::Network {
                            net: Some(ipnet(&n.net, &format!("{f}[{j}].net"))?),
                            except: n
                                .except
                                .iter()
                                .enumerate()
                                .map(|(k, e)| ipnet(e, &format!("{f}[{j}].except[{k}]")))
                                .collect::<Result<_, _>>()?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
                authentication: Some(api::Authentication {
                    permit: Some(match &a.authentication {
                        Authentication::Unauthenticated => {
                            Permit::Unauthenticated(Default::default())
                        }
                        Authentication::MeshTls {
                            identities,
                            suffixes,
                        } => Permit::MeshTls(MeshTls {
                            identities: identities.clone(),
                            suffixes: suffixes.clone(),
                        }),
                    }),
                }),
            })
        })
        .collect()
}

impl HttpMatch {
    fn to_proto(&self) -> api::HttpMatch {
        use api::{header_match::Value, path_match::Kind};
        api::HttpMatch {
            path: self.path.as_ref().map(|p| api::PathMatch {
                kind: Some(match p {
                    PathMatch::Exact(p) => Kind::Exact(p.clone()),
                    PathMatch::Prefix(p) => Kind::Prefix(p.clone()),
                    PathMatch::Regex(p) => Kind::Regex(p.clone()),
                }),
            }),
            method: self.method.clone(),
            headers: self
                .headers
                .iter()
                .map(|h| api::HeaderMatch {
                    name: h.name.clone(),
                    value: Some(match &h.value {
                        HeaderValue::Exact(v) => Value::Exact(v.clone()),
                        HeaderValue::Regex(r) => Value::Regex(r.clone()),
                    }),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part of a policy survives the trip through JSON.
    #[test]
    fn a_policy_round_trips_through_json() {
        let mut p = api::DefaultPolicy::ClusterAuthenticated
            .inbound_policy(&[super::super::Cidr::V4_ALL, "fd00::/8".parse().unwrap()]);
        p.authorizations[0].networks[0]
            .except
            .push(ipnet("10.1.0.0/16", "x").unwrap());
        p.fallback = api::Fallback::Audit as i32;
        p.http_routes = vec![api::HttpRoute {
            meta: Some(api::default_meta("probe")),
            matches: vec![api::HttpMatch {
                path: Some(api::PathMatch {
                    kind: Some(api::path_match::Kind::Prefix("/api".into())),
                }),
                method: "GET".into(),
                headers: vec![api::HeaderMatch {
                    name: "x-user".into(),
                    value: Some(api::header_match::Value::Regex("a.*".into())),
                }],
            }],
            authorizations: vec![api::DefaultPolicy::AllUnauthenticated
                .authorization(&[])
                .unwrap()],
            hostnames: vec!["*.example.com".into()],
        }];
        let json = serde_json::to_string(&PolicyJson::from(&p)).unwrap();
        let back: PolicyJson = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_proto().unwrap(), p);
        let mut bad = back;
        bad.authorizations[0].networks[0].net = "10.0.0.0".into();
        assert_eq!(
            bad.to_proto().unwrap_err(),
            "authorizations[0].networks[0].net: \"10.0.0.0\" is not ip/prefix_len"
        );
    }
}
