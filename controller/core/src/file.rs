//! The `file` discovery backend's format: services, endpoints and profiles from a
//! YAML file, parsed and validated here, and [`apply`]'d to an index; the controller's
//! `file` module re-reads the file when it changes. Used by `mesh demo`, on VMs, and
//! in tests.
//!
//! The file is translated into the same objects the Kubernetes backend produces
//! (`Service`, `EndpointSlice`, and a `Pod` for each endpoint with labels or an
//! identity), so the index treats both backends alike and pod-IP lookups and
//! identities work here too. An invalid file is reported with its line, column and
//! field path, and the last good state stays in force.
//!
//! ```yaml
//! services:
//!   - name: voting
//!     namespace: emojivoto
//!     clusterIPs: ["198.19.0.10"]      # optional virtual IPs
//!     opaquePorts: [3306]               # optional
//!     ports:                            # optional; default [{port: 80}]
//!       - {port: 80, name: http, targetPort: 8080}   # targetPort defaults to port
//!     endpoints:
//!       - address: 127.0.0.1:7031       # `ip` (port = targetPort) or `ip:port` (one port only)
//!         ready: true                   # optional, default true
//!         hostname: voting-0            # optional
//!         labels: {pod: voting-0, deployment: voting, serviceaccount: voting}
//!         identity: voting.emojivoto.serviceaccount.identity.mesh.cluster.local  # => meshed
//!         admin: 127.0.0.1:4191         # optional, meshed only: its proxy's admin server,
//!                                       # which the metrics API scrapes (default: ip:4191)
//!         tap: 127.0.0.1:4190           # optional, meshed only: its proxy's tap server,
//!                                       # which the tap API observes (default: ip:4190)
//! profiles:                             # ServiceProfiles, as `kubectl apply` takes them
//!   - apiVersion: mesh.rs/v1alpha1
//!     kind: ServiceProfile
//!     metadata: {name: voting.emojivoto.svc.cluster.local}   # namespace: from the name
//!     spec: {routes: [{name: vote, condition: {method: POST}, isRetryable: true}]}
//! policies:                             # policy.mesh.rs objects, as `kubectl apply` takes them
//!   - apiVersion: policy.mesh.rs/v1alpha1
//!     kind: Server                      # or AuthorizationPolicy, MeshTLSAuthentication,
//!     metadata: {name: voting, namespace: emojivoto}   # NetworkAuthentication, HTTPRoute
//!     spec: {podSelector: {matchLabels: {deployment: voting}}, port: grpc, proxyProtocol: gRPC}
//! ```
//!
//! For authorization policy, an endpoint's pod also says (all optional): its labels
//! (`labels`, which `podSelector`s match), `defaultInboundPolicy` (the
//! `config.mesh.rs/default-inbound-policy` annotation), `namedPorts` (`{grpc: 8080}`,
//! its named container ports) and `probes` (`[{port: 8080, path: /healthz}]`, its
//! kubelet `httpGet` probes).
//!
//! A profile or policy with any problem makes the whole file invalid (reported with the
//! field), so the last good state, its profiles and policies included, stays in force.

use crate::index::PortSet;
use crate::index::{
    EndpointSlice, Identity, Index, ObjKey, Pod, ResetObjects, Resource, Service, ServicePort,
    SliceEndpoint, SlicePort, TargetPort,
};
use crate::policy::{self, index::Pod as PolicyPod};
use crate::yaml::{self, null_as_default};
use mesh_api::names::{self, ServiceAccount};
use serde::{de, Deserialize, Deserializer};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

/// Label names with a meaning of their own; any other label names the owner kind.
const POD_LABEL: &str = "pod";
const SA_LABEL: &str = "serviceaccount";

/// The objects a file describes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Discovery {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub pods: Vec<Pod>,
    /// Valid ServiceProfiles.
    pub profiles: Vec<crate::index::ServiceProfile>,
    /// Valid policy resources, each with its namespace.
    pub policies: Vec<(String, policy::Resource)>,
    /// The pods as the policy index sees them (labels, default policy, named ports,
    /// probes).
    pub policy_pods: Vec<PolicyPod>,
}

/// Why a file's content was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{field}: {message}", location.map(|(l, c)| format!("line {l} column {c}: ")).unwrap_or_default())]
pub struct InvalidFile {
    /// Where in the document, as `services[0].endpoints[1].address`.
    pub field: String,
    pub message: String,
    /// Line and column (1-based), when the YAML parser knows them.
    pub location: Option<(usize, usize)>,
}

// === the file's format ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    services: Vec<ServiceSpec>,
    #[serde(default, deserialize_with = "null_as_default")]
    profiles: Vec<serde_json::Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    policies: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceSpec {
    name: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default, rename = "clusterIPs", deserialize_with = "null_as_default")]
    cluster_ips: Vec<IpAddr>,
    #[serde(default, deserialize_with = "null_as_default")]
    opaque_ports: Vec<u16>,
    ports: Option<Vec<PortSpec>>,
    #[serde(default, deserialize_with = "null_as_default")]
    endpoints: Vec<EndpointSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PortSpec {
    port: u16,
    name: Option<String>,
    target_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointSpec {
    address: Address,
    #[serde(default = "default_ready")]
    ready: bool,
    hostname: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    labels: BTreeMap<String, String>,
    identity: Option<String>,
    /// `ip:port` of the endpoint's proxy admin server, when not at its IP on 4191.
    admin: Option<String>,
    /// `ip:port` of the endpoint's proxy tap server, when not at its IP on 4190.
    tap: Option<String>,
    /// The pod's `config.mesh.rs/default-inbound-policy`.
    #[serde(rename = "defaultInboundPolicy")]
    default_inbound_policy: Option<String>,
    /// The pod's named container ports.
    #[serde(default, rename = "namedPorts", deserialize_with = "null_as_default")]
    named_ports: BTreeMap<String, u16>,
    /// The pod's kubelet `httpGet` probes.
    #[serde(default, deserialize_with = "null_as_default")]
    probes: Vec<ProbeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeSpec {
    port: u16,
    path: Option<String>,
}

/// `ip` or `ip:port` (`[ip6]:port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Address {
    Ip(IpAddr),
    Socket(SocketAddr),
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Address::Socket(addr));
        }
        let bare = s
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(&s);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Ok(Address::Ip(ip)),
            Err(_) => Err(de::Error::custom(format!(
                "invalid address {s:?}: expected `ip` or `ip:port` (`[ipv6]:port`)"
            ))),
        }
    }
}

fn default_namespace() -> String {
    "default".to_string()
}

fn default_ready() -> bool {
    true
}

// === parsing ===

/// Parses and validates a file's content. `trust_domain` is the one identities must
/// be named in.
pub fn parse(text: &str, trust_domain: &str) -> Result<Discovery, InvalidFile> {
    parse_with(text, trust_domain, None)
}

/// [`parse`], also checking that profiles are named in `cluster_domain`.
pub fn parse_with(
    text: &str,
    trust_domain: &str,
    cluster_domain: Option<&str>,
) -> Result<Discovery, InvalidFile> {
    if text.trim().is_empty() {
        // An editor that truncates before writing shows an empty file for a moment;
        // taking it at its word would remove every service. `services: []` says it.
        return Err(invalid(
            "<document>",
            "file is empty (write `services: []` for no services)",
        ));
    }
    let spec: FileSpec = yaml::from_str(text).map_err(|e| InvalidFile {
        field: match e.path.as_str() {
            "." => "<document>".to_string(),
            _ => e.path,
        },
        message: e.message,
        location: e.location,
    })?;
    let profiles = spec
        .profiles
        .iter()
        .enumerate()
        .map(|(i, p)| profile(&format!("profiles[{i}]"), p, cluster_domain))
        .collect::<Result<Vec<_>, _>>()?;
    let policies = policies(&spec.policies)?;
    let mut out = build(spec, trust_domain)?;
    out.profiles = profiles;
    out.policies = policies;
    Ok(out)
}

/// One profile of the file, validated; its namespace comes from its name when the
/// document does not give it.
fn profile(
    at: &str,
    doc: &serde_json::Value,
    cluster_domain: Option<&str>,
) -> Result<crate::index::ServiceProfile, InvalidFile> {
    use crate::profile::{self, ServiceProfile};
    let parsed: ServiceProfile = serde_path_to_error::deserialize(doc).map_err(|e| {
        let field = match e.path().to_string() {
            p if p == "." => at.to_string(),
            p => format!("{at}.{p}"),
        };
        invalid(field, e.into_inner().to_string())
    })?;
    let valid = profile::validate_document(&parsed, cluster_domain)
        .map_err(|problems| first_problem(at, &problems))?;
    let from_name = parsed.metadata.name.split('.').nth(1).unwrap_or_default();
    let namespace = parsed.metadata.namespace.as_deref().unwrap_or(from_name);
    if namespace != from_name {
        return Err(invalid(
            format!("{at}.metadata.namespace"),
            format!(
                "{namespace:?} is not the namespace the name {:?} names: the file backend serves profiles from the service's own namespace",
                parsed.metadata.name
            ),
        ));
    }
    Ok(crate::index::ServiceProfile {
        key: ObjKey::new(namespace, &parsed.metadata.name),
        spec: crate::index::ProfileSpec(Arc::new(valid)),
    })
}

/// A document's problems as the file's error: the first, with its field under `at`,
/// and how many more there are.
fn first_problem(at: &str, problems: &crate::profile::Problems) -> InvalidFile {
    let Some(first) = problems.0.first() else {
        return invalid(at, "invalid");
    };
    let more = match problems.0.len() {
        1 => String::new(),
        n => format!(" (and {} more problems)", n - 1),
    };
    let field = match first.path.as_str() {
        "" | "." | "(document)" => at.to_string(),
        path => format!("{at}.{path}"),
    };
    invalid(field, format!("{}{more}", first.reason))
}

/// The file's policy documents, validated as the admission webhook validates them;
/// a document without a namespace is in `default`, as a service is.
fn policies(docs: &[serde_json::Value]) -> Result<Vec<(String, policy::Resource)>, InvalidFile> {
    let mut seen: HashMap<(policy::Kind, String, String), usize> = HashMap::new();
    let mut out = Vec::with_capacity(docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let at = format!("policies[{i}]");
        let resource = policy::validate_value(doc.clone())
            .map_err(|problems| first_problem(&at, &problems))?;
        let meta = resource.meta();
        let namespace = meta.namespace.clone().unwrap_or_else(default_namespace);
        check_label(&format!("{at}.metadata.namespace"), &namespace)?;
        let key = (resource.kind(), namespace.clone(), meta.name.clone());
        if let Some(first) = seen.insert(key, i) {
            return Err(invalid(
                format!("{at}.metadata.name"),
                format!(
                    "duplicate {} {namespace}/{} (first at policies[{first}])",
                    resource.kind().name(),
                    meta.name
                ),
            ));
        }
        out.push((namespace, resource));
    }
    Ok(out)
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidFile {
    InvalidFile {
        field: field.into(),
        message: message.into(),
        location: None,
    }
}

/// What is known of a pod the file describes, to check that every endpoint naming
/// it agrees.
struct PodSeen {
    at: String,
    pod: Pod,
}

fn build(spec: FileSpec, trust_domain: &str) -> Result<Discovery, InvalidFile> {
    let mut out = Discovery::default();
    let mut seen_services: HashMap<(String, String), usize> = HashMap::new();
    let mut seen_ips: HashMap<IpAddr, String> = HashMap::new();
    let mut pods: BTreeMap<ObjKey, PodSeen> = BTreeMap::new();
    let mut policy_pods: BTreeMap<ObjKey, PolicyPod> = BTreeMap::new();

    for (i, svc) in spec.services.into_iter().enumerate() {
        let at = format!("services[{i}]");
        check_label(&format!("{at}.name"), &svc.name)?;
        check_label(&format!("{at}.namespace"), &svc.namespace)?;
        if let Some(first) = seen_services.insert((svc.namespace.clone(), svc.name.clone()), i) {
            return Err(invalid(
                format!("{at}.name"),
                format!(
                    "duplicate service {}/{} (first at services[{first}])",
                    svc.namespace, svc.name
                ),
            ));
        }
        for (j, ip) in svc.cluster_ips.iter().enumerate() {
            if let Some(other) = seen_ips.insert(*ip, at.clone()) {
                return Err(invalid(
                    format!("{at}.clusterIPs[{j}]"),
                    format!("cluster IP {ip} is already used by {other}"),
                ));
            }
        }
        let key = ObjKey::new(&svc.namespace, &svc.name);

        let ports = match svc.ports {
            None => vec![ServicePort {
                name: None,
                port: 80,
                target_port: TargetPort::Number(80),
            }],
            Some(ports) => service_ports(&at, ports)?,
        };

        // Endpoints grouped by the port they serve on: one slice per group, as
        // Kubernetes splits slices by port set.
        let mut groups: BTreeMap<Option<u16>, Vec<SliceEndpoint>> = BTreeMap::new();
        let mut seen_addrs: HashMap<(IpAddr, Option<u16>), usize> = HashMap::new();
        for (j, ep) in svc.endpoints.into_iter().enumerate() {
            let at = format!("{at}.endpoints[{j}]");
            let (ip, own_port) = match ep.address {
                Address::Ip(ip) => (ip, None),
                Address::Socket(addr) => {
                    if ports.len() != 1 {
                        return Err(invalid(
                            format!("{at}.address"),
                            format!(
                                "a port is only allowed when the service has one port (it has {}); write the IP alone",
                                ports.len()
                            ),
                        ));
                    }
                    if addr.port() == 0 {
                        return Err(invalid(format!("{at}.address"), "port 0 is not a port"));
                    }
                    (addr.ip(), Some(addr.port()))
                }
            };
            if let Some(first) = seen_addrs.insert((ip, own_port), j) {
                return Err(invalid(
                    format!("{at}.address"),
                    format!("duplicate endpoint {ip} (first at endpoints[{first}])"),
                ));
            }
            if let Some(hostname) = &ep.hostname {
                check_label(&format!("{at}.hostname"), hostname)?;
            }
            let pod = endpoint_pod(&at, &key, &svc.name, j, ip, &ep, trust_domain)?;
            let pod_name = pod.as_ref().map(|p| Arc::clone(&p.key.name));
            if let Some(pod) = pod {
                merge_policy_pod(&mut policy_pods, policy_pod(&at, &pod.key, &ep)?);
                merge_pod(&mut pods, &at, pod)?;
            }
            groups.entry(own_port).or_default().push(SliceEndpoint {
                addresses: vec![ip],
                ready: ep.ready,
                hostname: ep.hostname.as_deref().map(Arc::from),
                pod: pod_name,
            });
        }

        for (n, (own_port, endpoints)) in groups.into_iter().enumerate() {
            out.slices.push(EndpointSlice {
                key: ObjKey::new(&svc.namespace, &format!("{}-{n}", svc.name)),
                service: Arc::clone(&key.name),
                ports: slice_ports_of(&ports, own_port),
                endpoints,
            });
        }
        out.services.push(Service {
            key,
            cluster_ips: svc.cluster_ips,
            ports,
            opaque_ports: PortSet::from_ports(svc.opaque_ports),
        });
    }
    out.pods = pods.into_values().map(|seen| seen.pod).collect();
    out.policy_pods = policy_pods.into_values().collect();
    Ok(out)
}

fn service_ports(at: &str, ports: Vec<PortSpec>) -> Result<Vec<ServicePort>, InvalidFile> {
    if ports.is_empty() {
        return Err(invalid(
            format!("{at}.ports"),
            "a service needs a port (omit `ports` for port 80)",
        ));
    }
    let many = ports.len() > 1;
    let mut out: Vec<ServicePort> = Vec::with_capacity(ports.len());
    for (k, p) in ports.into_iter().enumerate() {
        let at = format!("{at}.ports[{k}]");
        if p.port == 0 {
            return Err(invalid(format!("{at}.port"), "port 0 is not a port"));
        }
        if p.target_port == Some(0) {
            return Err(invalid(format!("{at}.targetPort"), "port 0 is not a port"));
        }
        if let Some(name) = &p.name {
            check_label(&format!("{at}.name"), name)?;
        }
        if many && p.name.is_none() {
            return Err(invalid(
                format!("{at}.name"),
                "each port of a service with several ports needs a name",
            ));
        }
        if out.iter().any(|q| q.port == p.port) {
            return Err(invalid(
                format!("{at}.port"),
                format!("duplicate port {}", p.port),
            ));
        }
        if p.name.is_some() && out.iter().any(|q| q.name.as_deref() == p.name.as_deref()) {
            return Err(invalid(
                format!("{at}.name"),
                format!("duplicate port name {:?}", p.name.unwrap_or_default()),
            ));
        }
        out.push(ServicePort {
            name: p.name.as_deref().map(Arc::from),
            port: p.port,
            target_port: TargetPort::Number(p.target_port.unwrap_or(p.port)),
        });
    }
    Ok(out)
}

/// The slice ports of an endpoint: each service port's target port, or the
/// endpoint's own port for a one-port service.
fn slice_ports_of(ports: &[ServicePort], own: Option<u16>) -> Vec<SlicePort> {
    ports
        .iter()
        .map(|p| SlicePort {
            name: p.name.clone(),
            port: match (own, &p.target_port) {
                (Some(own), _) => own,
                (None, TargetPort::Number(n)) => *n,
                // The file only has numeric target ports.
                (None, TargetPort::Name(_)) => p.port,
            },
        })
        .collect()
}

/// The pod behind an endpoint, when its labels or identity say anything about one.
fn endpoint_pod(
    at: &str,
    service: &ObjKey,
    service_name: &str,
    index: usize,
    ip: IpAddr,
    ep: &EndpointSpec,
    trust_domain: &str,
) -> Result<Option<Pod>, InvalidFile> {
    let admin = proxy_addr(
        at,
        "admin",
        ep.admin.as_deref(),
        ep,
        "where the endpoint's proxy serves /metrics",
    )?;
    let tap = proxy_addr(
        at,
        "tap",
        ep.tap.as_deref(),
        ep,
        "where the endpoint's proxy serves tap",
    )?;
    let says_policy =
        ep.default_inbound_policy.is_some() || !ep.named_ports.is_empty() || !ep.probes.is_empty();
    if ep.labels.is_empty() && ep.identity.is_none() && !says_policy {
        return Ok(None);
    }
    let mut owner = None;
    for (k, v) in &ep.labels {
        if v.is_empty() {
            return Err(invalid(format!("{at}.labels.{k}"), "a label needs a value"));
        }
        if k == POD_LABEL || k == SA_LABEL {
            continue;
        }
        if let Some((kind, _)) = &owner {
            return Err(invalid(
                format!("{at}.labels.{k}"),
                format!(
                    "labels are `pod`, `serviceaccount` and one owner kind (`deployment`, `statefulset`, ...); found both {kind:?} and {k:?}"
                ),
            ));
        }
        owner = Some((k.clone(), v.clone()));
    }
    let namespace = &*service.namespace;
    let mut sa = ep.labels.get(SA_LABEL).cloned();
    if let Some(identity) = &ep.identity {
        let id_sa = ServiceAccount::from_identity(identity, trust_domain)
            .filter(|account| account.namespace == namespace)
            .map(|account| account.name)
            .ok_or_else(|| {
                let suffix = format!(".{namespace}{}", names::identity_suffix(trust_domain));
                invalid(
                    format!("{at}.identity"),
                    format!("expected `<serviceaccount>{suffix}` (the service's namespace and trust domain {trust_domain:?}), got {identity:?}"),
                )
            })?;
        let id_sa = id_sa.as_str();
        match &sa {
            Some(sa) if sa != id_sa => {
                return Err(invalid(
                    format!("{at}.identity"),
                    format!("names service account {id_sa:?} but labels.serviceaccount is {sa:?}"),
                ))
            }
            _ => sa = Some(id_sa.to_string()),
        }
        debug_assert_eq!(
            Identity::for_service_account(namespace, id_sa, trust_domain)
                .name
                .as_ref(),
            identity
        );
    }
    let name = match ep.labels.get(POD_LABEL) {
        Some(name) => name.clone(),
        // Something must name the pod that carries the labels; the name is stable
        // across re-reads of an unchanged file.
        None => format!("{service_name}-{index}"),
    };
    Ok(Some(Pod {
        key: ObjKey::new(namespace, &name),
        ips: vec![ip],
        running: true,
        service_account: sa.as_deref().unwrap_or("default").into(),
        owner: owner.map(|(k, v)| (Arc::from(k), Arc::from(v))),
        meshed: ep.identity.is_some(),
        opaque_ports: PortSet::default(),
        admin,
        tap,
    }))
}

/// The pod behind an endpoint as the policy index sees it.
fn policy_pod(at: &str, key: &ObjKey, ep: &EndpointSpec) -> Result<PolicyPod, InvalidFile> {
    if let Some(name) = &ep.default_inbound_policy {
        name.parse::<policy::DefaultPolicy>()
            .map_err(|e| invalid(format!("{at}.defaultInboundPolicy"), e))?;
    }
    let mut named_ports: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (name, port) in &ep.named_ports {
        if !names::is_dns_label(name) || name.len() > 15 {
            return Err(invalid(
                format!("{at}.namedPorts.{name}"),
                format!("invalid port name {name:?}: expected at most 15 lowercase letters, digits or '-' (an IANA service name, as a container port's name)"),
            ));
        }
        if *port == 0 {
            return Err(invalid(
                format!("{at}.namedPorts.{name}"),
                "port 0 is not a port",
            ));
        }
        named_ports.entry(name.clone()).or_default().insert(*port);
    }
    let mut probes: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for (k, probe) in ep.probes.iter().enumerate() {
        if probe.port == 0 {
            return Err(invalid(
                format!("{at}.probes[{k}].port"),
                "port 0 is not a port",
            ));
        }
        probes
            .entry(probe.port)
            .or_default()
            .insert(crate::policy::index::probe_path(probe.path.as_deref()));
    }
    Ok(PolicyPod {
        namespace: key.namespace.to_string(),
        name: key.name.to_string(),
        labels: ep.labels.clone(),
        default_policy: ep.default_inbound_policy.clone(),
        opaque_ports: PortSet::default(),
        named_ports,
        probes,
    })
}

/// Merges what another endpoint of the same pod says (named ports and probes are the
/// pod's, whichever endpoint lists them).
fn merge_policy_pod(pods: &mut BTreeMap<ObjKey, PolicyPod>, pod: PolicyPod) {
    let key = ObjKey::new(&pod.namespace, &pod.name);
    match pods.get_mut(&key) {
        None => drop(pods.insert(key, pod)),
        Some(seen) => {
            seen.labels.extend(pod.labels);
            seen.default_policy = seen.default_policy.take().or(pod.default_policy);
            for (name, ports) in pod.named_ports {
                seen.named_ports.entry(name).or_default().extend(ports);
            }
            for (port, paths) in pod.probes {
                seen.probes.entry(port).or_default().extend(paths);
            }
        }
    }
}

/// An endpoint's proxy server address (`admin`, `tap`): `ip:port`, on a meshed
/// endpoint only.
fn proxy_addr(
    at: &str,
    field: &str,
    value: Option<&str>,
    ep: &EndpointSpec,
    what: &str,
) -> Result<Option<SocketAddr>, InvalidFile> {
    let Some(value) = value else {
        return Ok(None);
    };
    if ep.identity.is_none() {
        return Err(invalid(
            format!("{at}.{field}"),
            format!(
                "{field} is {what}; an endpoint without identity is not meshed and has no proxy"
            ),
        ));
    }
    match value.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(Some(addr)),
        _ => Err(invalid(
            format!("{at}.{field}"),
            format!("invalid {field} address {value:?}: expected `ip:port` (`[ipv6]:port`) of the proxy's {field} server"),
        )),
    }
}

/// Adds `pod`, or merges its IP into the pod of that name already seen (one pod may
/// back several services). The two must agree on everything else.
fn merge_pod(pods: &mut BTreeMap<ObjKey, PodSeen>, at: &str, pod: Pod) -> Result<(), InvalidFile> {
    match pods.get_mut(&pod.key) {
        None => {
            pods.insert(
                pod.key.clone(),
                PodSeen {
                    at: at.to_string(),
                    pod,
                },
            );
        }
        Some(seen) => {
            let same = seen.pod.service_account == pod.service_account
                && seen.pod.owner == pod.owner
                && seen.pod.meshed == pod.meshed
                && seen.pod.admin == pod.admin
                && seen.pod.tap == pod.tap;
            if !same {
                return Err(invalid(
                    format!("{at}.labels"),
                    format!(
                        "pod {} is described differently at {} (labels and identity of one pod must agree)",
                        pod.key, seen.at
                    ),
                ));
            }
            for ip in pod.ips {
                if !seen.pod.ips.contains(&ip) {
                    seen.pod.ips.push(ip);
                }
            }
        }
    }
    Ok(())
}

fn check_label(field: &str, s: &str) -> Result<(), InvalidFile> {
    if names::is_dns_label(s) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("invalid name {s:?}: expected 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit"),
        ))
    }
}

/// Replaces the index's objects with the file's, then marks every kind synced.
pub fn apply(index: &Index, discovery: Discovery) {
    tracing::info!(
        services = discovery.services.len(),
        slices = discovery.slices.len(),
        pods = discovery.pods.len(),
        "discovery file loaded"
    );
    // One change: a stream never sees the new pods with the old slices in between.
    index.reset_many([
        ResetObjects::Pods(discovery.pods),
        ResetObjects::EndpointSlices(discovery.slices),
        ResetObjects::Services(discovery.services),
        ResetObjects::ServiceProfiles(discovery.profiles, Vec::new()),
    ]);
    index.ready_once_synced(&Resource::ALL);
    for resource in Resource::ALL {
        index.synced(resource);
    }
}

#[cfg(test)]
mod tests;
