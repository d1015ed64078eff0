//! What `mesh install` renders and every part that reads an install back agrees on:
//! the names of the control plane's objects, the labels and annotations of meshed
//! pods, and the install's [`Values`] (the options an install was made with, recorded
//! in the `mesh-config` ConfigMap, from which the proxy injector takes its proxy
//! defaults and `mesh check` its expectations).
//!
//! One place for each name, so that the manifests, the injector, `mesh check` and
//! `mesh uninstall` cannot drift apart.

use serde::{Deserialize, Serialize};
use std::fmt;

pub use mesh_api::control_plane::{
    COMPONENT_LABEL, CONTROLLER_COMPONENT, DESTINATION_SERVICE_ACCOUNT, IDENTITY_SERVICE_ACCOUNT,
    NAMESPACE, TAP_SERVICE_ACCOUNT,
};

/// The names of the control plane's objects (all in [`NAMESPACE`] but the
/// cluster-scoped ones).
pub mod names {
    /// The controller's Deployment, its pods' ServiceAccount, its ClusterRole and
    /// ClusterRoleBinding, its PodDisruptionBudget.
    pub const CONTROLLER: &str = "mesh-controller";
    /// The Service proxies reach the destination service by (port 8086).
    pub const DESTINATION_SERVICE: &str = "mesh-destination";
    /// The Service proxies reach the identity service by (port 8080).
    pub const IDENTITY_SERVICE: &str = "mesh-identity";
    /// The Service the API server calls both admission webhooks by (443 → 8443).
    pub const WEBHOOK_SERVICE: &str = "mesh-webhook";
    /// The ConfigMap holding the install's [`Values`](super::Values) as YAML under
    /// [`CONFIG_KEY`].
    pub const CONFIG: &str = "mesh-config";
    pub const CONFIG_KEY: &str = "values.yaml";
    /// The ConfigMap of trust anchors (PEM), under [`TRUST_ROOTS_KEY`].
    pub const TRUST_ROOTS: &str = "mesh-identity-trust-roots";
    pub const TRUST_ROOTS_KEY: &str = "ca-bundle.crt";
    /// The issuer's certificate and key: a `kubernetes.io/tls` Secret (`tls.crt`,
    /// `tls.key`).
    pub const ISSUER: &str = "mesh-identity-issuer";
    /// The webhooks' serving certificate and key (`kubernetes.io/tls`), and `ca.crt`,
    /// the CA the webhook configurations' `caBundle` holds.
    pub const WEBHOOK_TLS: &str = "mesh-webhook-tls";
    /// The proxy injector's MutatingWebhookConfiguration.
    pub const INJECTOR_WEBHOOK: &str = "mesh-proxy-injector";
    /// The ServiceProfile validator's ValidatingWebhookConfiguration.
    pub const SP_VALIDATOR_WEBHOOK: &str = "mesh-sp-validator";
    /// Where the API server posts pods to inject.
    pub const INJECT_PATH: &str = "/inject";
    /// Where the API server posts ServiceProfiles to validate.
    pub const VALIDATE_SP_PATH: &str = "/validate/serviceprofiles";
    /// The policy validator's ValidatingWebhookConfiguration (`policy.mesh.rs` kinds).
    pub const POLICY_VALIDATOR_WEBHOOK: &str = "mesh-policy-validator";
    /// Where the API server posts the policy kinds to validate.
    pub const VALIDATE_POLICY_PATH: &str = "/validate/policy";
    /// The ClusterRole granting `mesh tap`/`mesh top` (verb `watch` on `tap.mesh.rs`
    /// `tap`) and the CLI's port-forward to the controller, for users to be bound to.
    pub const TAP_USER_ROLE: &str = "mesh-tap-user";
    /// The Role (in the control plane's namespace) granting what the CLI's observing
    /// commands need there: finding the controller's pod and port-forwarding to it.
    pub const CLI_ROLE: &str = "mesh-cli";
    /// The Secret key files and ConfigMap keys as the controller's pod mounts them.
    pub const MOUNT_TRUST_ROOTS: &str = "/var/run/mesh/identity/trust-roots/ca-bundle.crt";
    pub const MOUNT_ISSUER_CERT: &str = "/var/run/mesh/identity/issuer/tls.crt";
    pub const MOUNT_ISSUER_KEY: &str = "/var/run/mesh/identity/issuer/tls.key";
    pub const MOUNT_WEBHOOK_CERT: &str = "/var/run/mesh/webhook/tls.crt";
    pub const MOUNT_WEBHOOK_KEY: &str = "/var/run/mesh/webhook/tls.key";
    pub const MOUNT_CONFIG: &str = "/var/run/mesh/config/values.yaml";
}

/// Labels and annotations on pods, namespaces and the control plane's objects.
pub mod meta {
    /// `enabled` or `disabled`, on a pod (its template) or its namespace.
    pub const INJECT: &str = "mesh.rs/inject";
    pub const INJECT_ENABLED: &str = "enabled";
    pub const INJECT_DISABLED: &str = "disabled";
    /// On an injected pod: the control plane's namespace (the label by which the
    /// controller counts a pod as meshed).
    pub const CONTROL_PLANE_NS: &str = "mesh.rs/control-plane-ns";
    /// On an injected pod: its own namespace.
    pub const WORKLOAD_NS: &str = "mesh.rs/workload-ns";
    /// On an injected pod, followed by the owner's kind in lowercase
    /// (`mesh.rs/proxy-deployment: web`).
    pub const PROXY_OWNER_PREFIX: &str = "mesh.rs/proxy-";
    /// On an injected pod: the SHA-256 of the trust anchors' PEM, so that a pod
    /// template changes (and pods roll) when the anchors do.
    pub const TRUST_ROOT_SHA256: &str = "mesh.rs/trust-root-sha256";
    /// On an injected pod: the proxy's version (the image tag).
    pub const PROXY_VERSION: &str = "mesh.rs/proxy-version";
    /// On an injected pod: what injected it (`mesh/proxy-injector 0.1.0`, or
    /// `mesh/cli 0.1.0` for `mesh inject --manual`).
    pub const CREATED_BY: &str = "mesh.rs/created-by";
    /// On a pod the injector was asked to inject and did not: why.
    pub const INJECT_SKIPPED: &str = "mesh.rs/inject-skipped";
    /// Proxy settings for a pod or namespace: `config.mesh.rs/<name>`.
    pub const CONFIG_PREFIX: &str = "config.mesh.rs/";
    /// Ports whose traffic is opaque TCP, never detected.
    pub const OPAQUE_PORTS: &str = "config.mesh.rs/opaque-ports";
    /// The inbound policy of a pod's ports that no `Server` selects (one of
    /// `mesh_api::policy::DefaultPolicy`), on a pod or its namespace.
    pub const DEFAULT_INBOUND_POLICY: &str = "config.mesh.rs/default-inbound-policy";
    /// On a namespace: `disabled` keeps the admission webhooks away from it.
    pub const ADMISSION_WEBHOOKS: &str = "config.mesh.rs/admission-webhooks";
    /// The proxy's container name, and the init container's.
    pub const PROXY_CONTAINER: &str = "mesh-proxy";
    pub const INIT_CONTAINER: &str = "mesh-init";
}

/// An install's options: what `mesh install` was given (its flags and `--set`), with
/// their defaults. Rendered into the manifests, and recorded whole in the `mesh-config`
/// ConfigMap, where the proxy injector reads its proxy defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Values {
    /// The image registry both images come from.
    pub registry: String,
    /// The images' tag: the mesh version the manifests install.
    pub image_tag: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// The identity trust domain (the suffix of every identity).
    pub trust_domain: String,
    /// How long proxies' certificates live (a Go duration).
    pub identity_lifetime: String,
    /// High availability: replicas, a PodDisruptionBudget, anti-affinity.
    pub ha: bool,
    pub controller: ControllerValues,
    pub proxy: ProxyValues,
}

/// The controller's Deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerValues {
    /// Replicas (`--ha` makes it at least 3).
    pub replicas: u32,
    /// `MESH_LOG` (a tracing filter).
    pub log_level: String,
    pub resources: Resources,
    /// The uid (and gid) the controller runs as: the controller image's user.
    pub uid: u32,
}

/// The proxy every injected pod gets, unless the pod or its namespace says otherwise
/// (`config.mesh.rs/*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyValues {
    /// The image's name under the registry (`<registry>/<image>:<imageTag>`).
    pub image: String,
    /// `MESH_PROXY_LOG` (a tracing filter).
    pub log_level: String,
    pub resources: Resources,
    /// The uid the proxy runs as: the proxy image's user, and the one the init
    /// container's rules exempt from redirection.
    pub uid: u32,
    /// Inbound ports not redirected to the proxy (`22,8000-8010`).
    pub skip_inbound_ports: String,
    /// Outbound ports not redirected to the proxy.
    pub skip_outbound_ports: String,
    /// Ports whose traffic is opaque TCP (empty: the proxy's own defaults).
    pub opaque_ports: String,
    /// The proxy as a native sidecar (an init container with `restartPolicy:
    /// Always`), or as the pod's first container when false.
    pub native_sidecar: bool,
    /// The inbound policy of ports no `Server` selects, unless the pod or its
    /// namespace says otherwise (`config.mesh.rs/default-inbound-policy`): one of
    /// `mesh_api::policy::DefaultPolicy`.
    pub default_inbound_policy: String,
}

/// A container's resource requests and limits, in Kubernetes quantities; empty
/// strings are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
}

/// The controller image's name under the registry.
pub const CONTROLLER_IMAGE: &str = "mesh-controller";

/// The mesh version this build is (the images' default tag; `mesh check` compares it
/// with the controller's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The oldest Kubernetes version the manifests and the controller support: the first
/// with native sidecars on by default and `ValidatingAdmissionPolicy` GA, as Linkerd's
/// current minimum.
pub const MIN_KUBERNETES: (u32, u32) = (1, 31);

/// Every resource `mesh install` creates objects of, as (API group, resource,
/// namespaced), in apply order: what `mesh check --pre` asks permission to create
/// (a SelfSubjectAccessReview each), so the two cannot drift apart.
pub const INSTALLED_RESOURCES: &[(&str, &str, bool)] = &[
    ("", "namespaces", false),
    ("apiextensions.k8s.io", "customresourcedefinitions", false),
    ("", "serviceaccounts", true),
    ("rbac.authorization.k8s.io", "clusterroles", false),
    ("rbac.authorization.k8s.io", "clusterrolebindings", false),
    ("rbac.authorization.k8s.io", "roles", true),
    ("", "configmaps", true),
    ("", "secrets", true),
    ("", "services", true),
    ("apps", "deployments", true),
    ("policy", "poddisruptionbudgets", true),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        false,
    ),
];

/// A `--set key=value` that does not apply.
#[derive(Debug, PartialEq, Eq)]
pub struct SetError(String);

impl Default for Values {
    fn default() -> Self {
        Self {
            registry: "ghcr.io/mesh-rs".into(),
            image_tag: VERSION.into(),
            cluster_domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            identity_lifetime: "24h".into(),
            ha: false,
            controller: ControllerValues::default(),
            proxy: ProxyValues::default(),
        }
    }
}

impl Default for ControllerValues {
    fn default() -> Self {
        Self {
            replicas: 1,
            log_level: "info".into(),
            resources: Resources {
                cpu_request: "100m".into(),
                cpu_limit: String::new(),
                memory_request: "50Mi".into(),
                memory_limit: "250Mi".into(),
            },
            uid: 2103,
        }
    }
}

impl Default for ProxyValues {
    fn default() -> Self {
        Self {
            image: "mesh-proxy".into(),
            log_level: "warn,mesh_proxy=info".into(),
            resources: Resources {
                cpu_request: "10m".into(),
                cpu_limit: String::new(),
                memory_request: "20Mi".into(),
                memory_limit: "250Mi".into(),
            },
            uid: 2102,
            skip_inbound_ports: String::new(),
            skip_outbound_ports: String::new(),
            opaque_ports: String::new(),
            native_sidecar: true,
            default_inbound_policy: mesh_api::policy::DefaultPolicy::default().name().into(),
        }
    }
}

impl Values {
    /// `<registry>/mesh-proxy:<tag>`.
    pub fn proxy_image(&self) -> String {
        format!("{}/{}:{}", self.registry, self.proxy.image, self.image_tag)
    }

    /// `<registry>/mesh-controller:<tag>`.
    pub fn controller_image(&self) -> String {
        format!("{}/{CONTROLLER_IMAGE}:{}", self.registry, self.image_tag)
    }

    /// The controller's replicas: with `ha`, at least 3.
    pub fn controller_replicas(&self) -> u32 {
        if self.ha {
            self.controller.replicas.max(3)
        } else {
            self.controller.replicas
        }
    }

    /// Applies one `--set key=value`: `key` is a dotted path of the fields as the
    /// ConfigMap spells them (`proxy.logLevel`, `proxy.resources.cpuLimit`,
    /// `controller.replicas`), `value` is read as that field's type (a number, `true`
    /// or `false`, or text).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SetError> {
        let mut tree = serde_json::to_value(&*self).map_err(|e| SetError(e.to_string()))?;
        let mut node = &mut tree;
        let mut path = Vec::new();
        for part in key.split('.') {
            path.push(part);
            let keys = match node {
                serde_json::Value::Object(map) => map.keys().cloned().collect::<Vec<_>>(),
                _ => Vec::new(),
            };
            node = match node.get_mut(part) {
                Some(next) => next,
                None => {
                    let at = path[..path.len() - 1].join(".");
                    let known = if keys.is_empty() {
                        format!("{at:?} has no fields")
                    } else {
                        format!(
                            "known {}: {}",
                            if at.is_empty() {
                                "keys".to_string()
                            } else {
                                format!("keys under {at}")
                            },
                            keys.join(", ")
                        )
                    };
                    return Err(SetError(format!("--set {key}: no such key ({known})")));
                }
            };
        }
        *node = match node {
            serde_json::Value::Object(map) => {
                let fields = map.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(SetError(format!(
                    "--set {key}: a group of settings, not one; set one of its keys: {fields}"
                )));
            }
            serde_json::Value::Bool(_) => match value {
                "true" => true.into(),
                "false" => false.into(),
                _ => {
                    return Err(SetError(format!(
                        "--set {key}={value}: expected true or false"
                    )))
                }
            },
            serde_json::Value::Number(_) => match value.parse::<u32>() {
                Ok(n) => n.into(),
                Err(_) => {
                    return Err(SetError(format!(
                        "--set {key}={value}: expected a whole number"
                    )))
                }
            },
            _ => value.into(),
        };
        *self = serde_json::from_value(tree).map_err(|e| SetError(format!("--set {key}: {e}")))?;
        Ok(())
    }

    /// The values as the `mesh-config` ConfigMap holds them.
    pub fn to_yaml(&self) -> String {
        crate::yaml::to_string(self).unwrap_or_default()
    }

    /// Reads values back from the `mesh-config` ConfigMap's YAML; every key known
    /// (an unknown one is an error naming it), missing ones defaulted.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        crate::yaml::from_str(text).map_err(|e| e.to_string())
    }
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_reads_each_field_by_its_type() {
        let mut v = Values::default();
        v.set("proxy.logLevel", "debug").expect("text");
        v.set("proxy.resources.cpuLimit", "1")
            .expect("text that looks like a number");
        v.set("controller.replicas", "2").expect("number");
        v.set("ha", "true").expect("bool");
        assert_eq!(v.proxy.log_level, "debug");
        assert_eq!(v.proxy.resources.cpu_limit, "1");
        assert_eq!(v.controller.replicas, 2);
        assert_eq!(v.controller_replicas(), 3, "ha makes at least 3");
    }

    #[test]
    fn set_names_what_is_wrong() {
        let mut v = Values::default();
        let e = v.set("proxy.logLevl", "x").unwrap_err().to_string();
        assert!(e.contains("no such key") && e.contains("logLevel"), "{e}");
        let e = v.set("proxy", "x").unwrap_err().to_string();
        assert!(e.contains("group of settings"), "{e}");
        let e = v.set("ha", "yes").unwrap_err().to_string();
        assert!(e.contains("true or false"), "{e}");
        let e = v.set("controller.replicas", "-1").unwrap_err().to_string();
        assert!(e.contains("whole number"), "{e}");
        assert_eq!(v, Values::default(), "a failed set changes nothing");
    }

    #[test]
    fn values_round_trip_through_the_configmap_yaml() {
        let mut v = Values::default();
        v.set("proxy.skipInboundPorts", "22,8000-8010")
            .expect("set");
        let back = Values::from_yaml(&v.to_yaml()).expect("read back");
        assert_eq!(back, v);
        let e = Values::from_yaml("registry: x\nbogus: 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }
}
