//! The synthetic cluster: `services` Services spread over namespaces, each with one
//! EndpointSlice of `per_service` endpoints, each endpoint a running, meshed Pod owned by
//! the service's ReplicaSet, shaped as a Deployment's pods are.
//!
//! Nothing listens at these addresses: pod IPs are taken from 198.18.0.0/15 and cluster
//! IPs from 198.19.128.0/17 (RFC 2544 benchmarking space), so they can never reach a real
//! network. The services a proxy sends traffic to are separate ([`probe_objects`]), with
//! their endpoints on loopback.

use mesh_kube_fake::{endpoint_slice, pod, service, Endpoint, ServicePort};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};

/// The services' port, and the container port it targets.
pub(crate) const SERVICE_PORT: u16 = 80;
pub(crate) const TARGET_PORT: u16 = 8080;
/// Services per namespace, as in a cluster of a few dozen teams.
const SERVICES_PER_NAMESPACE: usize = 20;
/// The label that marks a pod as meshed (its proxy answers to this control plane).
const MESHED_LABEL: &str = "mesh.rs/control-plane-ns";
const CONTROL_PLANE_NS: &str = "mesh-system";
/// Nodes the pods are spread over.
const NODES: usize = 20;

/// The characters Kubernetes uses for generated name suffixes (no vowels, no
/// look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cluster {
    pub(crate) services: usize,
    pub(crate) per_service: usize,
}

impl Cluster {
    pub(crate) fn endpoints(&self) -> usize {
        self.services * self.per_service
    }

    pub(crate) fn namespace(&self, svc: usize) -> String {
        format!("ns-{:02}", svc / SERVICES_PER_NAMESPACE)
    }

    pub(crate) fn name(&self, svc: usize) -> String {
        format!("svc-{svc:04}")
    }

    /// The name a proxy asks the destination service for.
    pub(crate) fn authority(&self, svc: usize) -> String {
        format!(
            "{}.{}.svc.cluster.local:{SERVICE_PORT}",
            self.name(svc),
            self.namespace(svc)
        )
    }

    /// Endpoint `ep` of service `svc`: its pod's IP and the target port.
    pub(crate) fn endpoint_addr(&self, svc: usize, ep: usize) -> SocketAddr {
        let n = (svc * self.per_service + ep) as u32;
        // 198.18.0.0/15 holds 131,072 addresses.
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (n % 131_072));
        SocketAddr::from((ip, TARGET_PORT))
    }

    fn cluster_ip(svc: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 128, 0)) + (svc as u32 % 32_768))
    }

    /// The ReplicaSet of the service's Deployment: `<deployment>-<pod-template-hash>`.
    fn template_hash(svc: usize) -> String {
        suffix(svc as u64, 9)
    }

    fn pod_name(&self, svc: usize, ep: usize) -> String {
        format!(
            "{}-{}-{}",
            self.name(svc),
            Self::template_hash(svc),
            suffix((svc * self.per_service + ep) as u64 ^ 0x5eed, 5)
        )
    }

    pub(crate) fn services(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.services).map(|s| {
            service(
                &self.namespace(s),
                &self.name(s),
                &Self::cluster_ip(s).to_string(),
                &[ServicePort::new("http", SERVICE_PORT).target(TARGET_PORT)],
            )
        })
    }

    pub(crate) fn pods(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.services).flat_map(move |s| {
            let (ns, name, hash) = (self.namespace(s), self.name(s), Self::template_hash(s));
            let owner = format!("{name}-{hash}");
            (0..self.per_service)
                .map(|e| {
                    pod(
                        &ns,
                        &self.pod_name(s, e),
                        &self.endpoint_addr(s, e).ip().to_string(),
                        &name,
                        Some(("ReplicaSet", &owner)),
                        &[
                            ("app", &name),
                            ("app.kubernetes.io/name", &name),
                            ("pod-template-hash", &hash),
                            (MESHED_LABEL, CONTROL_PLANE_NS),
                        ],
                    )
                })
                .collect::<Vec<_>>()
        })
    }

    /// Service `svc`'s slice, with endpoint `e` ready when `ready(e)`.
    pub(crate) fn slice(&self, svc: usize, ready: impl Fn(usize) -> bool) -> Value {
        let endpoints: Vec<Endpoint> = (0..self.per_service)
            .map(|e| {
                Endpoint::new(&self.endpoint_addr(svc, e).ip().to_string(), ready(e))
                    .pod(&self.pod_name(svc, e))
                    .node(&format!("node-{}", (svc + e) % NODES))
            })
            .collect();
        endpoint_slice(
            &self.namespace(svc),
            &format!("{}-{}", self.name(svc), suffix(svc as u64 ^ 0xab, 5)),
            &self.name(svc),
            &[("http", TARGET_PORT)],
            &endpoints,
        )
    }

    pub(crate) fn slices(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.services).map(|s| self.slice(s, |_| true))
    }
}

/// A Kubernetes-looking random suffix of `len` characters, fixed by `seed`.
fn suffix(seed: u64, len: usize) -> String {
    // SplitMix64: well spread from consecutive seeds.
    let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ALPHANUMS[(z % ALPHANUMS.len() as u64) as usize] as char
        })
        .collect()
}

/// A service in `default` that a proxy sends traffic to, whose endpoints are real
/// backends on loopback: its Service, its unmeshed Pods (so the proxy speaks plain
/// HTTP/1 to them), and its slice with `endpoints` (pod name, address).
pub(crate) struct Probe {
    pub(crate) name: &'static str,
    pub(crate) cluster_ip: Ipv4Addr,
}

impl Probe {
    pub(crate) fn authority(&self) -> String {
        format!("{}.default.svc.cluster.local", self.name)
    }

    pub(crate) fn service(&self, target_port: u16) -> Value {
        service(
            "default",
            self.name,
            &self.cluster_ip.to_string(),
            &[ServicePort::new("http", SERVICE_PORT).target(target_port)],
        )
    }

    pub(crate) fn pod(&self, pod_name: &str, addr: SocketAddr) -> Value {
        pod(
            "default",
            pod_name,
            &addr.ip().to_string(),
            self.name,
            Some(("ReplicaSet", &format!("{}-6b7f9d5c48", self.name))),
            &[("app", self.name), ("pod-template-hash", "6b7f9d5c48")],
        )
    }

    pub(crate) fn slice(&self, endpoints: &[(&str, SocketAddr)]) -> Value {
        let port = endpoints.first().map_or(SERVICE_PORT, |(_, a)| a.port());
        let endpoints: Vec<Endpoint> = endpoints
            .iter()
            .map(|(name, addr)| Endpoint::new(&addr.ip().to_string(), true).pod(name))
            .collect();
        endpoint_slice(
            "default",
            &format!("{}-x7k2p", self.name),
            self.name,
            &[("http", port)],
            &endpoints,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_distinct() {
        let c = Cluster {
            services: 1000,
            per_service: 10,
        };
        let mut addrs = std::collections::HashSet::new();
        let mut pods = std::collections::HashSet::new();
        for s in 0..c.services {
            for e in 0..c.per_service {
                assert!(addrs.insert(c.endpoint_addr(s, e)));
                assert!(pods.insert(c.pod_name(s, e)));
            }
        }
        assert_eq!(c.namespace(999), "ns-49");
        assert_eq!(c.authority(7), "svc-0007.ns-00.svc.cluster.local:80");
        assert_eq!(c.endpoint_addr(999, 9).ip().to_string(), "198.18.39.15");
        assert_eq!(c.pods().count(), 10_000);
    }
}
