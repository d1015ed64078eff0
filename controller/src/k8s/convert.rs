//! Conversions from Kubernetes objects to the index's model types.
//!
//! Each conversion keeps only the fields discovery reads, so the watch loop can drop
//! the Kubernetes object as soon as it arrives: a Pod as the API sends it is kilobytes
//! (managed fields, container specs, statuses), its model a few dozen bytes. No input
//! makes a conversion panic: an absent field takes the default Kubernetes gives it, a
//! malformed entry (an IP, a port) is logged and skipped, and an object discovery cannot
//! use at all converts to `None`, which the watch loop treats as "not there".

#[cfg(test)]
mod tests;

use crate::index::PortSet;
use std::{net::IpAddr, ops::RangeInclusive, sync::Arc};

use k8s_openapi::{
    api::{core::v1 as core, discovery::v1 as discovery},
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use tracing::{debug, warn};

use crate::index::model::{
    EndpointSlice, ObjKey, Pod, Service, ServicePort, SliceEndpoint, SlicePort, TargetPort,
};

/// Ports that carry opaque TCP, on a Service or a Pod: `3306,5000-5002`; and the label
/// the injector sets on meshed pods, to the namespace of their control plane (the
/// names of an install are `mesh_core::install`'s).
pub use mesh_core::install::meta::{
    CONTROL_PLANE_NS as CONTROL_PLANE_NS_LABEL, OPAQUE_PORTS as OPAQUE_PORTS_ANNOTATION,
};
/// Names the Service an EndpointSlice belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Set by the Deployment controller on its ReplicaSets and their pods; the ReplicaSet's
/// name is `<deployment>-<hash>`.
const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// An entry of a port list that is not a port or a port range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid port or port range {entry:?}: {reason}")]
pub struct InvalidPortRange {
    entry: String,
    reason: &'static str,
}

/// Parses a comma-separated list of ports and inclusive port ranges, such as
/// `3306, 5000-5002`, into the sorted ports it names, without duplicates.
///
/// Spaces around entries and around `-` are allowed and empty entries (`3306,`) are
/// ignored; port 0 and a range whose start is above its end are errors. The first
/// invalid entry fails the whole list; see [`opaque_ports`] for the lenient reading used
/// on annotations.
pub fn parse_port_list(s: &str) -> Result<Vec<u16>, InvalidPortRange> {
    let mut ports = Vec::new();
    for entry in entries(s) {
        ports.extend(parse_port_range(entry)?);
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

fn entries(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// Parses one entry of a port list: `3306` or `5000-5002`.
fn parse_port_range(entry: &str) -> Result<RangeInclusive<u16>, InvalidPortRange> {
    let invalid = |reason| InvalidPortRange {
        entry: entry.to_owned(),
        reason,
    };
    let port = |s: &str| match s.trim().parse::<u16>() {
        Ok(0) => Err(invalid("port 0 is not a port")),
        Ok(p) => Ok(p),
        Err(_) => Err(invalid("not a number from 1 to 65535")),
    };
    match entry.split_once('-') {
        None => port(entry).map(|p| p..=p),
        Some((start, end)) => {
            let (start, end) = (port(start)?, port(end)?);
            if start > end {
                return Err(invalid("the range starts above its end"));
            }
            Ok(start..=end)
        }
    }
}

/// The opaque ports an object's annotation names; invalid entries are logged and
/// skipped, so one typo does not turn off every other opaque port of the object.
fn opaque_ports(meta: &ObjectMeta, key: &ObjKey) -> PortSet {
    let Some(value) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(OPAQUE_PORTS_ANNOTATION))
    else {
        return PortSet::default();
    };
    let mut ranges = Vec::new();
    for entry in entries(value) {
        match parse_port_range(entry) {
            Ok(range) => ranges.push(range),
            Err(error) => warn!(
                object = %key,
                annotation = OPAQUE_PORTS_ANNOTATION,
                %error,
                "ignoring an invalid opaque port entry"
            ),
        }
    }
    PortSet::from_ranges(ranges)
}

/// The `namespace/name` of an object; `None` if either is missing (never for objects
/// the API server sends).
pub(super) fn obj_key(meta: &ObjectMeta) -> Option<ObjKey> {
    let namespace = meta.namespace.as_deref().filter(|s| !s.is_empty())?;
    let name = meta.name.as_deref().filter(|s| !s.is_empty())?;
    Some(ObjKey::new(namespace, name))
}

// === Policy ===

/// A policy object from the watch, validated: valid, or its problems (which leave its
/// last valid version in force).
#[derive(Debug)]
pub(super) struct PolicyObject {
    pub key: ObjKey,
    pub resource: Result<mesh_core::policy::Resource, crate::profile::Problems>,
}

/// Decodes and validates a policy object of `kind` as the admission webhook does.
/// `None` only for an object with no name or namespace.
pub(super) fn policy(
    obj: &kube::api::DynamicObject,
    kind: mesh_core::policy::Kind,
) -> Option<PolicyObject> {
    let key = obj_key(&obj.metadata)?;
    let mut value = match serde_json::to_value(obj) {
        Ok(value) => value,
        Err(error) => {
            return Some(PolicyObject {
                key,
                resource: Err(crate::profile::Problems(vec![crate::profile::Invalid {
                    path: "(document)".into(),
                    reason: error.to_string(),
                }])),
            })
        }
    };
    // List items may come without their type; the watch says what they are.
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), mesh_core::policy::API_VERSION.into());
        map.insert("kind".into(), kind.name().into());
    }
    Some(PolicyObject {
        key,
        resource: mesh_core::policy::validate_value(value),
    })
}

/// What the policy index needs of a pod: its labels, its default-policy annotation,
/// its opaque ports, its named TCP container ports and its kubelet `httpGet` probes.
pub(super) fn policy_pod(pod: &core::Pod) -> Option<mesh_core::policy::index::Pod> {
    use mesh_core::policy::index::{probe_path, Pod};
    use std::collections::{BTreeMap, BTreeSet};
    let key = obj_key(&pod.metadata)?;
    let spec = pod.spec.as_ref();
    let containers = spec.into_iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    let mut named_ports: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    let mut probes: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for container in containers {
        let ports = container.ports.iter().flatten();
        let tcp = ports.filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"));
        for port in tcp {
            if let (Some(name), Ok(number)) = (&port.name, u16::try_from(port.container_port)) {
                if number != 0 {
                    named_ports.entry(name.clone()).or_default().insert(number);
                }
            }
        }
        let http_gets = [
            &container.liveness_probe,
            &container.readiness_probe,
            &container.startup_probe,
        ]
        .into_iter()
        .flatten()
        .filter_map(|probe| probe.http_get.as_ref());
        for get in http_gets {
            // A named port is resolved within the probe's own container.
            let port = match &get.port {
                IntOrString::Int(n) => u16::try_from(*n).ok(),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok()),
            };
            match port.filter(|p| *p != 0) {
                Some(port) => {
                    probes
                        .entry(port)
                        .or_default()
                        .insert(probe_path(get.path.as_deref()));
                }
                None => {
                    debug!(pod = %key, port = ?get.port, "a probe's port does not resolve; no probe route for it")
                }
            }
        }
    }
    Some(Pod {
        namespace: key.namespace.to_string(),
        name: key.name.to_string(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        default_policy: pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(mesh_core::install::meta::DEFAULT_INBOUND_POLICY))
            .cloned(),
        opaque_ports: opaque_ports(&pod.metadata, &key),
        named_ports,
        probes,
    })
}

// === Service ===

/// A ServiceProfile from the watch: valid (ready for the index), or invalid with
/// every problem, which leaves its last valid version in force.
#[derive(Debug, PartialEq)]
pub(super) enum Profile {
    Valid(crate::index::ServiceProfile),
    Invalid(ObjKey, crate::profile::Problems),
}

/// Decodes and validates a `ServiceProfile` object. `None` only for an object with no
/// name or namespace, which the API server never sends.
pub(super) fn profile(obj: &kube::api::DynamicObject, cluster_domain: &str) -> Option<Profile> {
    let key = obj_key(&obj.metadata)?;
    let spec = obj.data.get("spec").cloned().unwrap_or_default();
    Some(
        match crate::profile::validate_object(&key.name, &key.namespace, spec, cluster_domain) {
            Ok(v) => Profile::Valid(crate::index::ServiceProfile {
                key,
                spec: crate::index::ProfileSpec(Arc::new(v)),
            }),
            Err(problems) => Profile::Invalid(key, problems),
        },
    )
}

/// Converts a Service; `None` for an ExternalName service, which is a DNS alias with
/// neither virtual IPs nor endpoints, so discovery treats it as absent.
pub(super) fn service(svc: &core::Service) -> Option<Service> {
    let key = obj_key(&svc.metadata)?;
    let default_spec = core::ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let cluster_ips = cluster_ips(spec, &key);
    let ports = shrunk(
        spec.ports
            .iter()
            .flatten()
            .filter_map(|p| service_port(p, &key))
            .collect(),
    );
    let opaque_ports = opaque_ports(&svc.metadata, &key);
    Some(Service {
        key,
        cluster_ips,
        ports,
        opaque_ports,
    })
}

/// `spec.clusterIPs` (one per IP family), or the older single `spec.clusterIP`. A
/// headless service says `None` there, and gets no virtual IP.
fn cluster_ips(spec: &core::ServiceSpec, key: &ObjKey) -> Vec<IpAddr> {
    let listed = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips,
        _ => spec.cluster_ip.as_slice(),
    };
    shrunk(
        listed
            .iter()
            .map(|ip| ip.trim())
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .filter_map(|ip| parse_ip(ip, key, "cluster IP"))
            .collect(),
    )
}

fn service_port(p: &core::ServicePort, key: &ObjKey) -> Option<ServicePort> {
    // Proxies only ever resolve TCP destinations; a UDP port of the same number (DNS's
    // 53) would otherwise shadow the TCP one.
    if !is_tcp(p.protocol.as_deref()) {
        return None;
    }
    let name = non_empty(p.name.as_deref());
    let Some(port) = port_number(p.port) else {
        warn!(service = %key, port = p.port, "ignoring a service port out of range");
        return None;
    };
    let target_port = match &p.target_port {
        // The API server defaults an absent (or zero) target port to the port itself.
        None | Some(IntOrString::Int(0)) => TargetPort::Number(port),
        Some(IntOrString::Int(n)) => match port_number(*n) {
            Some(n) => TargetPort::Number(n),
            None => {
                warn!(service = %key, port, target_port = n, "ignoring a service port whose target port is out of range");
                return None;
            }
        },
        Some(IntOrString::String(s)) => match s.trim() {
            "" => TargetPort::Number(port),
            // A string is always a container port's name, even when it looks like a
            // number: the API rejects names without a letter, and the EndpointSlice
            // controller resolves strings by name only.
            name => TargetPort::Name(name.into()),
        },
    };
    Some(ServicePort {
        name,
        port,
        target_port,
    })
}

// === EndpointSlice ===

/// Converts a `discovery.k8s.io/v1` EndpointSlice; `None` for a slice that belongs to no
/// Service (no `kubernetes.io/service-name` label) or lists FQDNs rather than IPs.
pub(super) fn endpoint_slice(slice: &discovery::EndpointSlice) -> Option<EndpointSlice> {
    let key = obj_key(&slice.metadata)?;
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| non_empty(l.get(SERVICE_NAME_LABEL).map(String::as_str)))?;
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        debug!(slice = %key, address_type = %slice.address_type, "ignoring an endpoint slice that lists no IPs");
        return None;
    }
    let ports = shrunk(
        slice
            .ports
            .iter()
            .flatten()
            .filter_map(slice_port)
            .collect(),
    );
    let endpoints = shrunk(
        slice
            .endpoints
            .iter()
            .flatten()
            .filter_map(|e| slice_endpoint(e, &key))
            .collect(),
    );
    Some(EndpointSlice {
        key,
        service,
        ports,
        endpoints,
    })
}

fn slice_port(p: &discovery::EndpointPort) -> Option<SlicePort> {
    if !is_tcp(p.protocol.as_deref()) {
        return None;
    }
    // A port without a number means "any port" to Kubernetes; it comes only from
    // hand-written slices, and a destination needs a port to send to.
    let port = p.port.and_then(port_number)?;
    Some(SlicePort {
        name: non_empty(p.name.as_deref()),
        port,
    })
}

fn slice_endpoint(e: &discovery::Endpoint, key: &ObjKey) -> Option<SliceEndpoint> {
    let addresses: Vec<IpAddr> = shrunk(
        e.addresses
            .iter()
            .filter_map(|a| parse_ip(a.trim(), key, "endpoint address"))
            .collect(),
    );
    if addresses.is_empty() {
        return None;
    }
    // The API says a nil `ready` is to be read as ready.
    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
    let pod = e
        .target_ref
        .as_ref()
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .filter(|r| {
            r.namespace
                .as_deref()
                .is_none_or(|ns| *ns == *key.namespace)
        })
        .and_then(|r| non_empty(r.name.as_deref()));
    Some(SliceEndpoint {
        addresses,
        ready,
        hostname: non_empty(e.hostname.as_deref()),
        pod,
    })
}

// === Pod ===

/// Converts a Pod. `control_plane_ns` is this controller's namespace: a pod is meshed
/// only if its proxy belongs to this control plane.
pub(super) fn pod(pod: &core::Pod, control_plane_ns: &str) -> Option<Pod> {
    let key = obj_key(&pod.metadata)?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let labels = pod.metadata.labels.as_ref();

    // A host-network pod has its node's IPs, shared with the node itself and with every
    // other host-network pod there: found by IP, it would lend its name, labels and
    // identity to traffic for any of them. So it is not indexed by IP (its endpoints,
    // named by slices, still work).
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let ips = match status {
        Some(status) if !host_network => pod_ips(status, &key),
        _ => Vec::new(),
    };
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let service_account = spec
        .and_then(|s| non_empty(s.service_account_name.as_deref()))
        .unwrap_or_else(|| "default".into());
    let meshed = labels
        .and_then(|l| l.get(CONTROL_PLANE_NS_LABEL))
        .is_some_and(|ns| ns == control_plane_ns);
    Some(Pod {
        owner: owner(&pod.metadata),
        opaque_ports: opaque_ports(&pod.metadata, &key),
        // In a cluster the admin server is at the pod's IP, on the default port.
        admin: None,
        tap: None,
        key,
        ips,
        running,
        service_account,
        meshed,
    })
}

/// `status.podIPs` (one per IP family), or the older single `status.podIP`.
fn pod_ips(status: &core::PodStatus, key: &ObjKey) -> Vec<IpAddr> {
    let parse = |ip: &str| parse_ip(ip.trim(), key, "pod IP");
    let ips: Vec<IpAddr> = match status.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| parse(&ip.ip)).collect(),
        _ => status
            .pod_ip
            .iter()
            .filter(|ip| !ip.is_empty())
            .filter_map(|ip| parse(ip))
            .collect(),
    };
    shrunk(ips)
}

/// The workload that controls the pod, as (lowercase kind, name). A ReplicaSet made by
/// a Deployment is reported as the Deployment: that is the workload users name, and a
/// rollout must not change the label. It is recognised by its name, the Deployment's
/// name plus `-<pod-template-hash>`, which saves watching ReplicaSets.
fn owner(meta: &ObjectMeta) -> Option<(Arc<str>, Arc<str>)> {
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    if owner.kind.is_empty() || owner.name.is_empty() {
        return None;
    }
    if owner.kind == "ReplicaSet" {
        let deployment = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL))
            .filter(|hash| !hash.is_empty())
            .and_then(|hash| owner.name.strip_suffix(hash.as_str()))
            .and_then(|rest| rest.strip_suffix('-'))
            .filter(|name| !name.is_empty());
        if let Some(deployment) = deployment {
            return Some(("deployment".into(), deployment.into()));
        }
    }
    Some((
        owner.kind.to_ascii_lowercase().into(),
        owner.name.as_str().into(),
    ))
}

// === Helpers ===

/// Kubernetes' default protocol is TCP.
fn is_tcp(protocol: Option<&str>) -> bool {
    matches!(protocol, None | Some("TCP"))
}

fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

fn non_empty(s: Option<&str>) -> Option<Arc<str>> {
    s.filter(|s| !s.is_empty()).map(Arc::from)
}

fn parse_ip(ip: &str, key: &ObjKey, what: &'static str) -> Option<IpAddr> {
    match ip.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            warn!(object = %key, ip, "ignoring an invalid {what}");
            None
        }
    }
}

/// Drops the spare capacity `collect` leaves (a one-element Vec holds room for four):
/// the models live as long as their objects, thousands at a time.
fn shrunk<T>(mut v: Vec<T>) -> Vec<T> {
    v.shrink_to_fit();
    v
}
