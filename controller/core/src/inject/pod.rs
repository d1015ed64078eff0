//! What injection adds to a pod: the `mesh-init` init container, the proxy's
//! container, their volumes. One function per part, each the only place its shape
//! is decided, so the webhook and `mesh inject --manual` add exactly the same.

use super::settings::Settings;
use crate::install::{meta, names, Resources, Values, NAMESPACE};
use mesh_api::control_plane::{
    service_identity, DESTINATION_SERVICE_ACCOUNT, IDENTITY_SERVICE_ACCOUNT, TAP_SERVICE_ACCOUNT,
};
use serde_json::{json, Map, Value};

/// The proxy's ports (Linkerd's numbers).
pub const INBOUND_PORT: u16 = 4143;
pub const OUTBOUND_PORT: u16 = 4140;
pub const ADMIN_PORT: u16 = 4191;
pub const TAP_PORT: u16 = 4190;
/// The destination and identity services' ports.
pub const DESTINATION_PORT: u16 = 8086;
pub const IDENTITY_PORT: u16 = 8080;

/// The projected service-account token the proxy proves its identity with: its
/// volume, where it is mounted, and the audience the identity service's TokenReview
/// asks for (a token for the API server's own audience would be accepted by anyone
/// it is shown to).
pub const TOKEN_VOLUME: &str = "mesh-identity-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens/mesh-identity";
pub const TOKEN_FILE: &str = "token";
pub const TOKEN_AUDIENCE: &str = "identity.mesh.rs";
/// A token's life: 24 h; the kubelet renews it at 80% of that, and the proxy
/// re-reads the file at each certificate request.
pub const TOKEN_SECONDS: u64 = 86_400;
/// The init container's writable `/run`, where iptables takes its lock
/// (`/run/xtables.lock`) under a read-only root filesystem.
pub const INIT_RUN_VOLUME: &str = "mesh-init-run";

/// The downward-API variables the proxy's own variables are built from (`$(VAR)`
/// expansion needs them defined first).
const POD_NAME: &str = "_pod_name";
const POD_NS: &str = "_pod_ns";
const POD_SA: &str = "_pod_sa";

/// The `mesh-init` init container: `mesh-proxy init` (the proxy image's entrypoint
/// with `init`), root with NET_ADMIN and NET_RAW alone, for iptables.
pub fn init_container(s: &Settings) -> Value {
    let mut args = vec![
        "init".to_string(),
        "--proxy-uid".into(),
        s.uid.to_string(),
        "--inbound-port".into(),
        INBOUND_PORT.to_string(),
        "--outbound-port".into(),
        OUTBOUND_PORT.to_string(),
    ];
    for (flag, ports) in [
        ("--skip-inbound-ports", &s.skip_inbound_ports),
        ("--skip-outbound-ports", &s.skip_outbound_ports),
    ] {
        if !ports.is_empty() {
            args.extend([flag.to_string(), ports.clone()]);
        }
    }
    json!({
        "name": meta::INIT_CONTAINER,
        "image": s.image_ref(),
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "resources": resources(&s.resources),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
            "privileged": false,
            "readOnlyRootFilesystem": true,
            // iptables needs uid 0 (with the two capabilities only), whatever the pod
            // asks of its own containers.
            "runAsNonRoot": false,
            "runAsUser": 0,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{ "name": INIT_RUN_VOLUME, "mountPath": "/run" }],
    })
}

/// The proxy's container; `native` adds `restartPolicy: Always` (a native sidecar)
/// and a startup probe, so the pod's other containers start once it is ready.
/// `inbound_ports`: the pod's container ports ([`container_ports`]), whose policy the
/// proxy watches from start-up.
pub fn proxy_container(
    s: &Settings,
    values: &Values,
    anchors: &str,
    inbound_ports: &str,
    native: bool,
) -> Value {
    let probe = |path: &str, delay: u32| {
        json!({
            "httpGet": { "path": path, "port": ADMIN_PORT },
            "initialDelaySeconds": delay,
            "periodSeconds": 10,
            "timeoutSeconds": 1,
            "failureThreshold": 3,
        })
    };
    let mut c = json!({
        "name": meta::PROXY_CONTAINER,
        "image": s.image_ref(),
        "imagePullPolicy": "IfNotPresent",
        "env": env(s, values, anchors, inbound_ports),
        "ports": [
            { "name": "mesh-proxy", "containerPort": INBOUND_PORT, "protocol": "TCP" },
            { "name": "mesh-admin", "containerPort": ADMIN_PORT, "protocol": "TCP" },
            { "name": "mesh-tap", "containerPort": TAP_PORT, "protocol": "TCP" },
        ],
        "readinessProbe": probe("/ready", 2),
        "livenessProbe": probe("/live", 10),
        "resources": resources(&s.resources),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": s.uid,
            "runAsGroup": s.uid,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{ "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true }],
    });
    if native {
        if let Value::Object(map) = &mut c {
            map.insert("restartPolicy".into(), "Always".into());
            // The certificate comes within a second or two; two minutes covers a
            // controller that is itself starting.
            map.insert(
                "startupProbe".into(),
                json!({
                    "httpGet": { "path": "/ready", "port": ADMIN_PORT },
                    "periodSeconds": 1,
                    "timeoutSeconds": 1,
                    "failureThreshold": 120,
                }),
            );
        }
    }
    c
}

/// Every variable the proxy reads, in the order `$(VAR)` expansion needs.
pub fn env(s: &Settings, values: &Values, anchors: &str, inbound_ports: &str) -> Vec<Value> {
    let td = &values.trust_domain;
    let svc =
        |name: &str, port: u16| format!("{name}.{NAMESPACE}.svc.{}:{port}", values.cluster_domain);
    let field = |name: &str, path: &str| json!({ "name": name, "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": path } } });
    let var = |name: &str, value: String| json!({ "name": name, "value": value });
    let mut env = vec![
        field(POD_NAME, "metadata.name"),
        field(POD_NS, "metadata.namespace"),
        field(POD_SA, "spec.serviceAccountName"),
        var("MESH_PROXY_LOG", s.log_level.clone()),
        var(
            "MESH_PROXY_DESTINATION_ADDR",
            svc(names::DESTINATION_SERVICE, DESTINATION_PORT),
        ),
        var(
            "MESH_PROXY_DESTINATION_CONTEXT",
            format!("{{\"ns\":\"$({POD_NS})\",\"pod\":\"$({POD_NAME})\"}}"),
        ),
        var(
            "MESH_PROXY_DESTINATION_SVC_NAME",
            service_identity(DESTINATION_SERVICE_ACCOUNT, NAMESPACE, td),
        ),
        var(
            "MESH_PROXY_IDENTITY_ADDR",
            svc(names::IDENTITY_SERVICE, IDENTITY_PORT),
        ),
        var(
            "MESH_PROXY_IDENTITY_NAME",
            format!("$({POD_SA}).$({POD_NS}).serviceaccount.identity.mesh.{td}"),
        ),
        var(
            "MESH_PROXY_IDENTITY_SVC_NAME",
            service_identity(IDENTITY_SERVICE_ACCOUNT, NAMESPACE, td),
        ),
        var(
            "MESH_PROXY_IDENTITY_TOKEN_FILE",
            format!("{TOKEN_DIR}/{TOKEN_FILE}"),
        ),
        var("MESH_PROXY_IDENTITY_TRUST_ANCHORS", anchors.to_string()),
        var(
            "MESH_PROXY_TAP_SVC_NAME",
            service_identity(TAP_SERVICE_ACCOUNT, NAMESPACE, td),
        ),
        // Inbound policy: the pod's, from the policy service beside the destination
        // service; the default until it answers.
        var(
            "MESH_PROXY_POLICY_WORKLOAD",
            format!("{{\"ns\":\"$({POD_NS})\",\"pod\":\"$({POD_NAME})\"}}"),
        ),
        var(
            "MESH_PROXY_INBOUND_DEFAULT_POLICY",
            s.default_inbound_policy.clone(),
        ),
    ];
    if !inbound_ports.is_empty() {
        env.push(var("MESH_PROXY_INBOUND_PORTS", inbound_ports.to_string()));
    }
    if !s.opaque_ports.is_empty() {
        env.push(var("MESH_PROXY_OPAQUE_PORTS", s.opaque_ports.clone()));
    }
    env
}

/// The TCP ports the pod's containers (and native sidecars) declare, sorted and
/// comma-separated: the ports whose inbound policy the proxy watches from start-up.
pub fn container_ports(pod: &Value) -> String {
    let mut ports = std::collections::BTreeSet::new();
    for list in ["/spec/containers", "/spec/initContainers"] {
        for c in pod
            .pointer(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for p in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let tcp = p
                    .get("protocol")
                    .and_then(Value::as_str)
                    .is_none_or(|proto| proto == "TCP");
                let port = p.get("containerPort").and_then(Value::as_u64);
                if let Some(port) = port.filter(|p| tcp && (1..=65535).contains(p)) {
                    ports.insert(port);
                }
            }
        }
    }
    ports
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The volumes both containers mount.
pub fn volumes() -> Vec<Value> {
    vec![
        json!({
            "name": TOKEN_VOLUME,
            "projected": { "sources": [{ "serviceAccountToken": {
                "audience": TOKEN_AUDIENCE,
                "expirationSeconds": TOKEN_SECONDS,
                "path": TOKEN_FILE,
            } }] },
        }),
        json!({ "name": INIT_RUN_VOLUME, "emptyDir": {} }),
    ]
}

/// Requests and limits, the empty ones left out (an empty `resources` is valid).
pub fn resources(r: &Resources) -> Value {
    let part = |cpu: &str, memory: &str| {
        let mut m = Map::new();
        if !cpu.is_empty() {
            m.insert("cpu".into(), cpu.into());
        }
        if !memory.is_empty() {
            m.insert("memory".into(), memory.into());
        }
        m
    };
    let mut out = Map::new();
    let requests = part(&r.cpu_request, &r.memory_request);
    let limits = part(&r.cpu_limit, &r.memory_limit);
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Value::Object(out)
}
