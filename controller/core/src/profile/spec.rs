//! The ServiceProfile spec as users write it: Linkerd's `linkerd.io/v1alpha2` field for
//! field, plus `maxRetries` on a route. Unknown fields are errors (as Linkerd's
//! validator's strict decoding), so a typo is reported instead of silently ignored.
//!
//! Everything that can be wrong in a value (a regex, a duration, a range) is kept as
//! written here and checked by [`super::validate`], which can then name the field.
//!
//! An empty list or mapping may be written as nothing at all (`routes:`), as YAML users
//! do (see [`null_as_default`]).

use crate::yaml::null_as_default;
use serde::{Deserialize, Serialize};

/// A whole `ServiceProfile` document.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceProfile {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    #[serde(default, deserialize_with = "null_as_default")]
    pub spec: ServiceProfileSpec,
}

/// The part of `metadata` a profile needs: the rest of Kubernetes' object metadata is
/// accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceProfileSpec {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub routes: Vec<RouteSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudgetSpec>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dst_overrides: Vec<WeightedDstSpec>,
    /// Linkerd's controller overwrites this from the Service; accepted for
    /// compatibility and ignored (opaque ports come from the Service here too).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub opaque_ports: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<RequestMatchSpec>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub response_classes: Vec<ResponseClassSpec>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_retryable: bool,
    /// A Go duration (`250ms`, `1m30s`) covering every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// At most this many retries of one request (mesh's addition; unset: only the
    /// budget limits them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// One of `method`, `pathRegex`, `all`, `any`, `not`; several set are all required
/// (an implicit `all`), as in Linkerd.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestMatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<RequestMatchSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<RequestMatchSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<RequestMatchSpec>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseClassSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<ResponseMatchSpec>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_failure: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseMatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusRangeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<ResponseMatchSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<ResponseMatchSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<ResponseMatchSpec>>,
}

/// An inclusive range of HTTP statuses. One bound alone means from that bound on (or
/// up to it): unlike Linkerd, whose proxy drops such a class.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRangeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

/// All three fields are required when a budget is given, as in Linkerd.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryBudgetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retries_per_second: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedDstSpec {
    #[serde(default)]
    pub authority: String,
    /// A Kubernetes quantity: an integer (`1`, `100`) or a string (`"500m"`, `"0.5"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Quantity>,
}

/// A quantity as the CRD's schema takes it (`x-kubernetes-int-or-string`): an integer,
/// or a string. A number with a fraction (`0.5` unquoted) is neither, and the API
/// server refuses it, so decoding refuses it here too, saying how to write it;
/// [`super::validate`] checks that the integer is not negative and the string is a
/// quantity.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Quantity {
    Integer(i64),
    String(String),
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(QuantityVisitor)
    }
}

struct QuantityVisitor;

impl serde::de::Visitor<'_> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer or a quantity string such as \"500m\"")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
        Ok(Quantity::Integer(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
        i64::try_from(v)
            .map(Quantity::Integer)
            .map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
        // What the API server sees as an integer (`1.0` arrives as `1`) is one.
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            return Ok(Quantity::Integer(v as i64));
        }
        Err(E::custom(format!(
            "{v} is a number with a fraction, which the CRD's schema refuses (an integer or a string): write it as a string, \"{v}\", or in thousandths, \"{}m\"",
            (v * 1000.0).round()
        )))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
        Ok(Quantity::String(v.to_string()))
    }
}
