//! The proxy injector's decision, pure: a pod as the admission request carries it,
//! what is known of its namespace and owner, and the install's values in; a JSON
//! Patch, or why the pod is skipped, out. The webhook (`controller/src/webhook/
//! inject.rs`) adds the lookups and the HTTP; `mesh inject --manual` applies the same
//! patch offline, so both inject alike.
//!
//! The rules, in order:
//! 1. The pod's `mesh.rs/inject` annotation, else its namespace's (annotation, then
//!    label), says whether to inject: `enabled` injects, `disabled` on the pod skips
//!    (recorded), anything else on the pod skips (recorded: a typo is visible). Nothing
//!    asked, or only the namespace's `disabled`: no patch at all.
//! 2. Asked to inject, a pod is still skipped, with the reason in
//!    `mesh.rs/inject-skipped`, when it uses the host's network (the init container's
//!    iptables rules would be the node's), when it already has a `mesh-proxy` or
//!    `mesh-init` container (injected by hand, or by another injector), or when a
//!    `config.mesh.rs/*` annotation is invalid ([`settings`]).
//! 3. Otherwise [`pod`] says what is added; [`inject`] only decides where, and copies
//!    the namespace's `config.mesh.rs/*` annotations the pod lacks (and the install's
//!    opaque ports) onto the pod, where the destination service reads them.

pub mod patch;
pub mod pod;
pub mod settings;

pub use patch::Patch;
pub use settings::Settings;

use crate::install::{meta, Values, NAMESPACE};
use serde_json::Value;
use std::collections::BTreeMap;

/// The workload that owns a pod, resolved through its ReplicaSet (a Deployment's) or
/// Job (a CronJob's): `kind` as Kubernetes spells it (`Deployment`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// A namespace's labels and annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Everything the decision needs.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The pod (`request.object`).
    pub pod: &'a Value,
    pub namespace: &'a Namespace,
    pub owner: Option<&'a Owner>,
    /// The install's values (the `mesh-config` ConfigMap).
    pub values: &'a Values,
    /// The trust anchors' PEM, given to the proxy and hashed into
    /// `mesh.rs/trust-root-sha256`.
    pub trust_anchors: &'a str,
    /// What injects (`mesh/proxy-injector 0.1.0`), for `mesh.rs/created-by`.
    pub created_by: &'a str,
}

/// The decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Inject: the patch adds the proxy.
    Inject(Patch),
    /// Asked to inject but skipped: why, and the patch that records it on the pod.
    Skip { reason: String, patch: Patch },
    /// Nothing asked: the pod is left as it is.
    NotAsked,
}

/// Decides for one pod.
pub fn decide(input: Input<'_>) -> Decision {
    let pod = input.pod;
    let annotations = string_map(pod.pointer("/metadata/annotations"));
    let asked = match annotations.get(meta::INJECT).map(String::as_str) {
        Some(v) => Some(("pod", v)),
        None => input
            .namespace
            .annotations
            .get(meta::INJECT)
            .or_else(|| input.namespace.labels.get(meta::INJECT))
            .map(|v| ("namespace", v.as_str())),
    };
    let skip = |reason: String| {
        let mut patch = Patch::default();
        patch.set_in_map(
            &["metadata", "annotations"],
            pod.pointer("/metadata/annotations")
                .is_some_and(Value::is_object),
            &[(meta::INJECT_SKIPPED.to_string(), reason.clone())],
        );
        if !pod.get("metadata").is_some_and(Value::is_object) {
            // Not a pod the API server would send; still, never a patch that fails.
            patch = Patch::default();
        }
        Decision::Skip { reason, patch }
    };
    match asked {
        None | Some(("namespace", meta::INJECT_DISABLED)) => return Decision::NotAsked,
        Some((_, meta::INJECT_ENABLED)) => {}
        Some(("pod", meta::INJECT_DISABLED)) => {
            return skip(format!("{}: {}", meta::INJECT, meta::INJECT_DISABLED))
        }
        Some((source, other)) => {
            return skip(format!(
                "the {source}'s {}={other:?}: expected {} or {}",
                meta::INJECT,
                meta::INJECT_ENABLED,
                meta::INJECT_DISABLED
            ))
        }
    }
    if pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true)) {
        return skip("the pod uses the host's network (hostNetwork: true)".into());
    }
    for list in ["initContainers", "containers"] {
        let names = containers(pod, list);
        if let Some(c) = names
            .iter()
            .find(|n| [meta::PROXY_CONTAINER, meta::INIT_CONTAINER].contains(&n.as_str()))
        {
            return skip(format!("already injected: the pod has a {c} container"));
        }
    }
    if !pod.pointer("/spec/containers").is_some_and(Value::is_array)
        || !pod.get("metadata").is_some_and(Value::is_object)
    {
        return skip("not a pod: metadata and spec.containers are required".into());
    }
    let settings = match Settings::resolve(input.values, &input.namespace.annotations, &annotations)
    {
        Ok(s) => s,
        Err(reason) => return skip(reason),
    };
    Decision::Inject(inject(input, &settings))
}

/// The patch that injects `settings`' proxy into the pod.
pub fn inject(input: Input<'_>, settings: &Settings) -> Patch {
    let pod = input.pod;
    let mut patch = Patch::default();
    let native = settings.native_sidecar;
    let init = pod::init_container(settings);
    let ports = pod::container_ports(pod);
    let proxy = pod::proxy_container(settings, input.values, input.trust_anchors, &ports, native);
    let has_init = pod
        .pointer("/spec/initContainers")
        .is_some_and(Value::is_array);
    // `mesh-init` first, so every other init container's traffic is redirected too;
    // a native proxy right after it, so it carries theirs.
    let mut inits = vec![init];
    if native {
        inits.push(proxy.clone());
    }
    patch.extend_array(&["spec", "initContainers"], has_init, Some(0), inits);
    if !native {
        patch.extend_array(&["spec", "containers"], true, Some(0), vec![proxy]);
    }
    let has_volumes = pod.pointer("/spec/volumes").is_some_and(Value::is_array);
    patch.extend_array(&["spec", "volumes"], has_volumes, None, pod::volumes());

    let mut labels = vec![
        (meta::CONTROL_PLANE_NS.to_string(), NAMESPACE.to_string()),
        (meta::WORKLOAD_NS.to_string(), input.namespace.name.clone()),
    ];
    if let Some(owner) = input.owner {
        let key = format!(
            "{}{}",
            meta::PROXY_OWNER_PREFIX,
            owner.kind.to_ascii_lowercase()
        );
        // A label value holds 63 characters; a longer name (valid for a Deployment)
        // would make the API server refuse the pod, so it is left out.
        if is_label_value(&owner.name) && is_label_name(&key) {
            labels.push((key, owner.name.clone()));
        }
    }
    let has_labels = pod
        .pointer("/metadata/labels")
        .is_some_and(Value::is_object);
    patch.set_in_map(&["metadata", "labels"], has_labels, &labels);

    let mut annotations = vec![
        (
            meta::TRUST_ROOT_SHA256.to_string(),
            trust_root_sha256(input.trust_anchors),
        ),
        (meta::PROXY_VERSION.to_string(), settings.version.clone()),
        (meta::CREATED_BY.to_string(), input.created_by.to_string()),
    ];
    annotations.extend(inherited(input, settings));
    let has_annotations = pod
        .pointer("/metadata/annotations")
        .is_some_and(Value::is_object);
    patch.set_in_map(&["metadata", "annotations"], has_annotations, &annotations);
    patch
}

/// The namespace's `config.mesh.rs/*` annotations the pod lacks, and the install's
/// opaque ports when neither names any, copied onto the pod (as Linkerd does): the
/// destination service reads a pod's own `config.mesh.rs/opaque-ports` to tell
/// clients which of its ports carry opaque TCP, and the pod then shows the settings
/// its proxy runs with.
fn inherited(input: Input<'_>, settings: &Settings) -> Vec<(String, String)> {
    let pod = string_map(input.pod.pointer("/metadata/annotations"));
    let mut out: Vec<(String, String)> = input
        .namespace
        .annotations
        .iter()
        .filter(|(k, _)| {
            k.starts_with(meta::CONFIG_PREFIX)
                && k.as_str() != meta::ADMISSION_WEBHOOKS
                && !pod.contains_key(k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let named =
        pod.contains_key(meta::OPAQUE_PORTS) || out.iter().any(|(k, _)| k == meta::OPAQUE_PORTS);
    if !named && !settings.opaque_ports.is_empty() {
        out.push((
            meta::OPAQUE_PORTS.to_string(),
            settings.opaque_ports.clone(),
        ));
    }
    out
}

/// The SHA-256 of the anchors' PEM, in lowercase hex.
pub fn trust_root_sha256(pem: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, pem.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The names of the containers in `spec.<list>`.
fn containers(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A `map[string]string` (labels, annotations); other values are left out.
pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A label value: at most 63 characters, alphanumerics, `-`, `_`, `.`, starting and
/// ending with an alphanumeric (or empty).
fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && (s.is_empty()
            || (s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

/// A label key's name part (after `mesh.rs/`) follows the value's rule, non-empty.
fn is_label_name(key: &str) -> bool {
    key.split_once('/')
        .is_some_and(|(_, name)| !name.is_empty() && is_label_value(name))
}

#[cfg(test)]
mod tests;
