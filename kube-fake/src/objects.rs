//! Builders for realistic Services, EndpointSlices and Pods, shaped as the API server and
//! its controllers write them, so that k8s-openapi deserializes them and a controller
//! sees the fields it would see in a cluster.
//!
//! They return `serde_json::Value`s for [`super::FakeKube::apply`]; a test that needs an
//! unusual object edits the value (`obj["spec"]["type"] = "NodePort".into()`).

use std::hash::{Hash as _, Hasher as _};

use serde_json::{json, Map, Value};

/// A port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name; empty for the one unnamed port a Service may have.
    pub name: String,
    pub port: u16,
    pub target_port: TargetPort,
}

/// Where a Service port sends traffic on its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    /// A named container port, resolved per pod.
    Name(String),
}

impl ServicePort {
    /// A TCP port whose target is the same port number.
    pub fn new(name: &str, port: u16) -> Self {
        Self {
            name: name.to_owned(),
            port,
            target_port: TargetPort::Number(port),
        }
    }

    /// Targets another port number.
    pub fn target(mut self, port: u16) -> Self {
        self.target_port = TargetPort::Number(port);
        self
    }

    /// Targets a named container port.
    pub fn target_name(mut self, name: &str) -> Self {
        self.target_port = TargetPort::Name(name.to_owned());
        self
    }
}

/// A Service selecting pods labelled `app=<name>`. `cluster_ip` is `"None"` for a
/// headless service.
/// A `mesh.rs/v1alpha1` ServiceProfile named `name` (the service's FQDN) with `spec`.
pub fn service_profile(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "mesh.rs/v1alpha1",
        "kind": "ServiceProfile",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

pub fn service(namespace: &str, name: &str, cluster_ip: &str, ports: &[ServicePort]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| {
            let mut port = Map::new();
            if !p.name.is_empty() {
                port.insert("name".into(), p.name.clone().into());
            }
            port.insert("protocol".into(), "TCP".into());
            port.insert("port".into(), p.port.into());
            port.insert(
                "targetPort".into(),
                match &p.target_port {
                    TargetPort::Number(n) => (*n).into(),
                    TargetPort::Name(n) => n.clone().into(),
                },
            );
            Value::Object(port)
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": [if cluster_ip.contains(':') { "IPv6" } else { "IPv4" }],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "selector": {"app": name},
            "ports": ports,
        },
        "status": {"loadBalancer": {}},
    })
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: String,
    pub ready: bool,
    /// The pod behind the endpoint (its `targetRef`).
    pub pod: Option<String>,
    /// Set for the pods of a StatefulSet behind a headless service.
    pub hostname: Option<String>,
    pub node: Option<String>,
}

impl Endpoint {
    pub fn new(ip: &str, ready: bool) -> Self {
        Self {
            ip: ip.to_owned(),
            ready,
            pod: None,
            hostname: None,
            node: None,
        }
    }

    pub fn pod(mut self, name: &str) -> Self {
        self.pod = Some(name.to_owned());
        self
    }

    pub fn hostname(mut self, hostname: &str) -> Self {
        self.hostname = Some(hostname.to_owned());
        self
    }

    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }
}

/// An EndpointSlice of `service`, labelled and shaped as the endpointslice controller
/// writes them. `ports` are `(name, port)`, the name empty for an unnamed service port.
/// Unlike a real slice it has no owner reference, since the Service's uid is not known
/// here.
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: &[Endpoint],
) -> Value {
    let ipv6 = endpoints.first().is_some_and(|e| e.ip.contains(':'));
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            let mut ep = json!({
                "addresses": [e.ip],
                // The controller reports `serving` like `ready` for pods not terminating.
                "conditions": {"ready": e.ready, "serving": e.ready, "terminating": false},
            });
            if let Some(pod) = &e.pod {
                ep["targetRef"] = json!({"kind": "Pod", "namespace": namespace, "name": pod});
            }
            if let Some(hostname) = &e.hostname {
                ep["hostname"] = hostname.clone().into();
            }
            if let Some(node) = &e.node {
                ep["nodeName"] = node.clone().into();
            }
            ep
        })
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, port)| json!({"name": name, "protocol": "TCP", "port": port}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generateName": format!("{service}-"),
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": if ipv6 { "IPv6" } else { "IPv4" },
        "endpoints": endpoints,
        "ports": ports,
    })
}

/// A running, ready Pod with one container, `serviceAccountName` `service_account`, and
/// if given an owner `(kind, name)` (e.g. `("ReplicaSet", "web-7d4b9c")`) as its
/// controller. The owner's uid is derived from its namespace, kind and name, so it is
/// the same for every pod of one owner, as in a cluster.
pub fn pod(
    namespace: &str,
    name: &str,
    ip: &str,
    service_account: &str,
    owner: Option<(&str, &str)>,
    labels: &[(&str, &str)],
) -> Value {
    let labels: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).into()))
        .collect();
    let mut metadata = json!({"name": name, "namespace": namespace, "labels": labels});
    if let Some((kind, owner_name)) = owner {
        let api_version = match kind {
            "ReplicaSet" | "Deployment" | "StatefulSet" | "DaemonSet" => "apps/v1",
            "Job" | "CronJob" => "batch/v1",
            _ => "v1",
        };
        metadata["ownerReferences"] = json!([{
            "apiVersion": api_version,
            "kind": kind,
            "name": owner_name,
            "uid": stable_uid(&[namespace, kind, owner_name]),
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
    }
    let ready = |t: &str| json!({"type": t, "status": "True"});
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [{
                "name": "app",
                "image": "mesh-test-app:latest",
                "imagePullPolicy": "IfNotPresent",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }],
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": true,
            "nodeName": "node-1",
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "serviceAccount": service_account,
            "serviceAccountName": service_account,
            "terminationGracePeriodSeconds": 30,
        },
        "status": {
            "phase": "Running",
            "conditions": [
                ready("PodReadyToStartContainers"),
                ready("Initialized"),
                ready("Ready"),
                ready("ContainersReady"),
                ready("PodScheduled"),
            ],
            "hostIP": "192.0.2.1",
            "hostIPs": [{"ip": "192.0.2.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "qosClass": "BestEffort",
        },
    })
}

/// A uid-shaped string that depends only on `parts`.
fn stable_uid(parts: &[&str]) -> String {
    let half = |seed: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut h);
        parts.hash(&mut h);
        h.finish()
    };
    let hex = format!("{:016x}{:016x}", half(0), half(1));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
