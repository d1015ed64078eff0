//! ServiceProfiles (`mesh.rs/v1alpha1`, kind `ServiceProfile`): the spec as users write
//! it, Linkerd's `linkerd.io/v1alpha2` field for field plus a per-route retry cap
//! ([`spec`]); validation that names the field and the reason of every problem and
//! turns a valid spec into the routes, budget and traffic split the proxy receives
//! ([`validate`]); Go durations ([`duration`]).
//!
//! This module is pure: the destination service, the file backend, the admission
//! webhook and `mesh profile validate` all use the same checks, so a profile one of
//! them accepts, all accept.

pub mod duration;
pub mod spec;
pub mod validate;

pub use self::{
    spec::ServiceProfile,
    validate::{validate, validate_document, Invalid, Problems, Validated},
};

pub const GROUP: &str = "mesh.rs";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "mesh.rs/v1alpha1";
pub const KIND: &str = "ServiceProfile";
pub const PLURAL: &str = "serviceprofiles";

/// Parses one YAML document as a profile and validates it: the error names the
/// field (for YAML problems too) and says why.
pub fn parse_yaml(text: &str, cluster_domain: Option<&str>) -> Result<Validated, Problems> {
    let de = serde_yaml::Deserializer::from_str(text);
    let profile: ServiceProfile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_yaml's message repeats the path and the location: keep its core.
        let msg = inner.to_string();
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m);
        let msg = match msg.split_once(": ") {
            Some((prefix, rest)) if !prefix.contains(' ') => rest,
            _ => msg,
        };
        let at = inner
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        Problems(vec![Invalid {
            path: if path == "." {
                "(document)".into()
            } else {
                path
            },
            reason: format!("{msg}{at}"),
        }])
    })?;
    validate_document(&profile, cluster_domain)
}

/// Decodes and validates a ServiceProfile object as the API server holds it: its
/// name, namespace and `spec` (JSON). What the kubernetes backend and `mesh check`
/// read, so both judge an object alike; decoding problems name their `spec.` path.
pub fn validate_object(
    name: &str,
    namespace: &str,
    spec: serde_json::Value,
    cluster_domain: &str,
) -> Result<Validated, Problems> {
    let spec: spec::ServiceProfileSpec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = format!("spec.{}", e.path());
        let reason = e.into_inner().to_string();
        Problems(vec![Invalid { path, reason }])
    })?;
    let doc = ServiceProfile {
        metadata: spec::Metadata {
            name: name.to_string(),
            namespace: Some(namespace.to_string()),
            other: Default::default(),
        },
        spec,
        ..Default::default()
    };
    validate_document(&doc, Some(cluster_domain))
}

#[cfg(test)]
mod tests;
