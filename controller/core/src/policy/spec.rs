//! The policy kinds' documents as users write them (`policy.mesh.rs/v1alpha1`), field
//! for field as the CRDs in `manifests/crds/` describe them; unknown fields refused.
//! What the schema cannot say is checked by [`super::validate`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A document of any policy kind: the common envelope around a kind's spec.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Object<S> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: S,
    /// Written by the API server and controllers, never read.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// What the policy kinds read of an object's metadata; the rest is kept out of the way.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// RFC 3339 (`2026-01-02T03:04:05Z`), which sorts as time does: the older of two
    /// Servers on one port wins it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerSpec {
    /// Required (checked by `validate`, which names it).
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    /// Required (checked by `validate`, which names it).
    #[serde(default)]
    pub port: Option<IntOrString>,
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// A default policy's name; `deny` when unset (the CRD's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_policy: Option<String>,
}

/// Kubernetes' LabelSelector.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, deserialize_with = "crate::yaml::null_as_default")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "crate::yaml::null_as_default")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, deserialize_with = "crate::yaml::null_as_default")]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// A port number or a port name (Kubernetes' `x-kubernetes-int-or-string`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        Self::Int(0)
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IntOrString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port number or a port name")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        de.deserialize_any(Visitor)
    }
}

/// `proxyProtocol`: what the proxy serves on the port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ProxyProtocol {
    /// Detected: HTTP/1, HTTP/2 or opaque TCP.
    #[default]
    #[serde(rename = "unknown")]
    Unknown,
    #[serde(rename = "HTTP/1")]
    Http1,
    #[serde(rename = "HTTP/2")]
    Http2,
    #[serde(rename = "gRPC")]
    Grpc,
    #[serde(rename = "opaque")]
    Opaque,
}

impl ProxyProtocol {
    /// As the document writes it.
    pub fn name(self) -> &'static str {
        match self {
            ProxyProtocol::Unknown => "unknown",
            ProxyProtocol::Http1 => "HTTP/1",
            ProxyProtocol::Http2 => "HTTP/2",
            ProxyProtocol::Grpc => "gRPC",
            ProxyProtocol::Opaque => "opaque",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// Required (checked by `validate`, which names it).
    #[serde(default)]
    pub target_ref: Option<TargetRef>,
    /// Required; may be empty (everyone allowed).
    #[serde(default)]
    pub required_authentication_refs: Option<Vec<ObjectRef>>,
}

/// `targetRef`: always in the policy's own namespace.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// A reference to an object, in the referrer's namespace unless `namespace` says.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshTlsAuthenticationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_refs: Option<Vec<ObjectRef>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkAuthenticationSpec {
    #[serde(default, deserialize_with = "crate::yaml::null_as_default")]
    pub networks: Vec<NetworkSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkSpec {
    pub cidr: String,
    #[serde(default, deserialize_with = "crate::yaml::null_as_default")]
    pub except: Vec<String>,
}

/// A subset of Gateway API v1 `HTTPRoute`'s spec.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default, deserialize_with = "crate::yaml::null_as_default")]
    pub parent_refs: Vec<ParentRef>,
    #[serde(default, deserialize_with = "crate::yaml::null_as_default")]
    pub hostnames: Vec<String>,
    #[serde(default, deserialize_with = "crate::yaml::null_as_default")]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParentRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteRule {
    #[serde(default, deserialize_with = "crate::yaml::null_as_default")]
    pub matches: Vec<HttpRouteMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, deserialize_with = "crate::yaml::null_as_default")]
    pub headers: Vec<HttpHeaderMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpPathMatch {
    #[serde(default, rename = "type")]
    pub kind: PathMatchType,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum PathMatchType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpHeaderMatch {
    #[serde(default, rename = "type")]
    pub kind: HeaderMatchType,
    pub name: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum HeaderMatchType {
    #[default]
    Exact,
    RegularExpression,
}
