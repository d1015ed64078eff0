//! The controller's own picture of the cluster: services, endpoint slices and pods,
//! reduced to the fields discovery needs. Backends (Kubernetes, file) translate into
//! these types; nothing here knows where they came from.
//!
//! Keeping only these fields is what keeps the controller small: a Kubernetes `Pod`
//! object is kilobytes, a [`Pod`] here is a few dozen bytes plus its labels.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

/// The port of a proxy's admin server (`/metrics`, `/ready`), in every pod.
pub const PROXY_ADMIN_PORT: u16 = 4191;

/// The port of a proxy's tap server (`mesh.tap.Tap/Observe`), in every pod.
pub const PROXY_TAP_PORT: u16 = 4190;

/// `namespace/name` of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A valid ServiceProfile: the object's key (`<ns>/<svc>.<ns>.svc.<cluster-domain>`)
/// and what the proxy receives. Invalid profiles never reach the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceProfile {
    pub key: ObjKey,
    pub spec: ProfileSpec,
}

/// A validated profile, shared by every snapshot that carries it.
#[derive(Clone, Debug)]
pub struct ProfileSpec(pub Arc<crate::profile::Validated>);

impl PartialEq for ProfileSpec {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

/// Validation admits only finite numbers, so equality is an equivalence.
impl Eq for ProfileSpec {}

/// A Kubernetes Service (or a service of the file backend).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub key: ObjKey,
    /// The service's virtual IPs; empty for a headless service.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// Ports that carry opaque TCP (annotation `config.mesh.rs/opaque-ports`).
    pub opaque_ports: PortSet,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name; `None` when the service has a single unnamed port.
    pub name: Option<Arc<str>>,
    pub port: u16,
    pub target_port: TargetPort,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    /// A container port name, resolved per endpoint slice (each slice lists the
    /// number it resolved to under the service port's name).
    Name(Arc<str>),
}

/// A `discovery.k8s.io/v1` EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    pub key: ObjKey,
    /// The owning service (label `kubernetes.io/service-name`), same namespace.
    pub service: Arc<str>,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    /// Equal to the service port's name (`None` for a single unnamed port).
    pub name: Option<Arc<str>>,
    /// The resolved target port.
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; an absent condition counts as ready, as Kubernetes says.
    pub ready: bool,
    /// `hostname` (set for pods of a StatefulSet behind a headless service).
    pub hostname: Option<Arc<str>>,
    /// The pod this address belongs to (`targetRef` of kind Pod), same namespace.
    pub pod: Option<Arc<str>>,
}

/// The fields of a Pod that discovery uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub key: ObjKey,
    pub ips: Vec<IpAddr>,
    /// Phase `Running`: pods are found by IP only while running.
    pub running: bool,
    pub service_account: Arc<str>,
    /// The workload that owns the pod: (`deployment`, `web`), (`statefulset`, `db`),
    /// ... A ReplicaSet created by a Deployment is reported as its Deployment.
    pub owner: Option<(Arc<str>, Arc<str>)>,
    /// Whether the pod runs a proxy of this control plane (label
    /// `mesh.rs/control-plane-ns` equal to the controller's namespace).
    pub meshed: bool,
    /// Ports that carry opaque TCP (annotation `config.mesh.rs/opaque-ports`).
    pub opaque_ports: PortSet,
    /// Where its proxy's admin server is, when not at its IP on [`PROXY_ADMIN_PORT`]
    /// (the file backend's `admin`: local proxies share an IP).
    pub admin: Option<SocketAddr>,
    /// Where its proxy's tap server is, when not at its IP on [`PROXY_TAP_PORT`] (the
    /// file backend's `tap`, for the same reason).
    pub tap: Option<SocketAddr>,
}

impl Pod {
    /// Where the metrics API scrapes the pod's proxy: its own admin address, else its
    /// first IP on [`PROXY_ADMIN_PORT`]; `None` for a pod with neither.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .or_else(|| Some(SocketAddr::new(*self.ips.first()?, PROXY_ADMIN_PORT)))
    }

    /// Where the tap API observes the pod's proxy: its own tap address, else its first
    /// IP on [`PROXY_TAP_PORT`]; `None` for a pod with neither.
    pub fn tap_addr(&self) -> Option<SocketAddr> {
        self.tap
            .or_else(|| Some(SocketAddr::new(*self.ips.first()?, PROXY_TAP_PORT)))
    }
}

/// A set of TCP ports, kept as sorted, disjoint, inclusive ranges: an annotation such as
/// `1-65535` costs one range, not 65,535 entries on every pod that carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet(Box<[(u16, u16)]>);

impl PortSet {
    /// The set of every port in `ranges` (inclusive, in any order, overlapping or not).
    pub fn from_ranges(ranges: impl IntoIterator<Item = std::ops::RangeInclusive<u16>>) -> Self {
        let mut rs: Vec<(u16, u16)> = ranges
            .into_iter()
            .filter(|r| !r.is_empty())
            .map(|r| (*r.start(), *r.end()))
            .collect();
        rs.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(rs.len());
        for (start, end) in rs {
            match merged.last_mut() {
                Some(last) if u32::from(start) <= u32::from(last.1) + 1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Self(merged.into_boxed_slice())
    }

    pub fn from_ports(ports: impl IntoIterator<Item = u16>) -> Self {
        Self::from_ranges(ports.into_iter().map(|p| p..=p))
    }

    pub fn contains(&self, port: u16) -> bool {
        self.0
            .binary_search_by(|&(start, end)| {
                if end < port {
                    std::cmp::Ordering::Less
                } else if start > port {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> impl Iterator<Item = std::ops::RangeInclusive<u16>> + '_ {
        self.0.iter().map(|&(s, e)| s..=e)
    }
}

/// A workload identity, as proxies check it in TLS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// `<sa>.<ns>.serviceaccount.identity.mesh.<trust-domain>`, also the SNI.
    pub name: Arc<str>,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub uri: Arc<str>,
}

impl Identity {
    pub fn for_service_account(namespace: &str, sa: &str, trust_domain: &str) -> Self {
        let account = mesh_api::names::ServiceAccount::new(namespace, sa);
        Self {
            name: account.identity(trust_domain).into(),
            uri: account.spiffe_id(trust_domain).into(),
        }
    }
}

/// One endpoint as the destination service sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: std::net::SocketAddr,
    pub weight: u32,
    /// `pod`, the owner kind with its name, `serviceaccount` (without the `dst_`
    /// prefix proxies add).
    pub labels: BTreeMap<Arc<str>, Arc<str>>,
    pub identity: Option<Identity>,
    /// The endpoint is meshed: HTTP may travel to it as HTTP/2.
    pub h2: bool,
    pub opaque: bool,
}

/// The default endpoint weight, as Linkerd's.
pub const DEFAULT_WEIGHT: u32 = 10_000;

/// The kinds of object a backend feeds the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Services,
    EndpointSlices,
    Pods,
    ServiceProfiles,
}

impl Resource {
    pub const ALL: [Resource; 4] = [
        Self::Services,
        Self::EndpointSlices,
        Self::Pods,
        Self::ServiceProfiles,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Services => "services",
            Self::EndpointSlices => "endpointslices",
            Self::Pods => "pods",
            Self::ServiceProfiles => "serviceprofiles",
        }
    }
}

#[cfg(test)]
mod port_set_tests {
    use super::PortSet;

    #[test]
    fn ranges_merge_and_membership_is_exact() {
        let set = PortSet::from_ranges([5000..=5002, 3306..=3306, 5003..=5003, 1..=2, 2..=3]);
        let ranges: Vec<_> = set.ranges().collect();
        assert_eq!(ranges, [1..=3, 3306..=3306, 5000..=5003]);
        for p in [1, 3, 3306, 5000, 5003] {
            assert!(set.contains(p), "{p}");
        }
        for p in [0, 4, 3305, 3307, 4999, 5004, 65535] {
            assert!(!set.contains(p), "{p}");
        }
        let all = PortSet::from_ranges([1..=65535]);
        assert!(all.contains(65535) && all.contains(1) && !all.contains(0));
        assert!(PortSet::default().is_empty());
        assert_eq!(
            PortSet::from_ports([80, 81, 79]),
            PortSet::from_ranges([79..=81])
        );
    }
}
