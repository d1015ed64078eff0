//! The default inbound policies and IP networks, the rules both ends read alike: the
//! controller compiles a port no `Server` selects with [`DefaultPolicy`], and a proxy
//! applies the same value before the controller has answered
//! (`MESH_PROXY_INBOUND_DEFAULT_POLICY`); [`Cidr`] is the one reader of a network
//! (`10.0.0.0/8`), for the CRDs, the controller's `--cluster-networks` and the proxy's
//! `MESH_PROXY_POLICY_CLUSTER_NETWORKS`.

use super as api;
use std::{fmt, net::IpAddr, str::FromStr};

/// The default inbound policies: the cluster's (controller flag), a pod's
/// (`config.mesh.rs/default-inbound-policy`), and a Server's `accessPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DefaultPolicy {
    /// Everyone, from everywhere: what a mesh without policy does.
    #[default]
    AllUnauthenticated,
    /// Meshed clients (any identity), from everywhere.
    AllAuthenticated,
    /// Anyone from the cluster's networks.
    ClusterUnauthenticated,
    /// Meshed clients from the cluster's networks.
    ClusterAuthenticated,
    /// Nobody (but loopback and, on HTTP, the kubelet's probes).
    Deny,
    /// Everyone, each request or connection counted and logged as the denial it would be.
    Audit,
}

impl DefaultPolicy {
    pub const ALL: [DefaultPolicy; 6] = [
        DefaultPolicy::AllUnauthenticated,
        DefaultPolicy::AllAuthenticated,
        DefaultPolicy::ClusterUnauthenticated,
        DefaultPolicy::ClusterAuthenticated,
        DefaultPolicy::Deny,
        DefaultPolicy::Audit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterUnauthenticated => "cluster-unauthenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Deny => "deny",
            DefaultPolicy::Audit => "audit",
        }
    }

    /// The authorization the policy grants, if any (`deny` and `audit` grant none:
    /// audit allows by its fallback).
    pub fn authorization(self, cluster_networks: &[Cidr]) -> Option<api::Authz> {
        let all = || vec![Cidr::V4_ALL.network(), Cidr::V6_ALL.network()];
        let cluster = || cluster_networks.iter().map(Cidr::network).collect();
        let (networks, authenticated) = match self {
            DefaultPolicy::AllUnauthenticated => (all(), false),
            DefaultPolicy::AllAuthenticated => (all(), true),
            DefaultPolicy::ClusterUnauthenticated => (cluster(), false),
            DefaultPolicy::ClusterAuthenticated => (cluster(), true),
            DefaultPolicy::Deny | DefaultPolicy::Audit => return None,
        };
        Some(api::Authz {
            meta: Some(default_meta(self.name())),
            networks,
            authentication: Some(match authenticated {
                true => any_identity(),
                false => unauthenticated(),
            }),
        })
    }

    /// What traffic no authorization allows gets.
    pub fn fallback(self) -> api::Fallback {
        match self {
            DefaultPolicy::Audit => api::Fallback::Audit,
            _ => api::Fallback::Deny,
        }
    }

    /// The whole policy of a port under this default, as the controller sends it for
    /// a port no `Server` selects (less the `probe` route it adds from the pod's
    /// probes), and as a proxy applies it before the controller has answered.
    pub fn inbound_policy(self, cluster_networks: &[Cidr]) -> api::InboundPolicy {
        api::InboundPolicy {
            server: Some(default_meta(self.name())),
            protocol: Some(api::Protocol {
                kind: Some(api::protocol::Kind::Detect(Default::default())),
            }),
            authorizations: self.authorization(cluster_networks).into_iter().collect(),
            http_routes: vec![],
            fallback: self.fallback() as i32,
        }
    }
}

impl FromStr for DefaultPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "{s:?} is not a default inbound policy: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `Meta` of something the controller made itself: `kind: default`, this name.
pub fn default_meta(name: &str) -> api::Meta {
    api::Meta {
        group: String::new(),
        kind: "default".into(),
        name: name.into(),
    }
}

pub fn unauthenticated() -> api::Authentication {
    api::Authentication {
        permit: Some(api::authentication::Permit::Unauthenticated(
            api::authentication::Unauthenticated {},
        )),
    }
}

pub fn any_identity() -> api::Authentication {
    api::Authentication {
        permit: Some(api::authentication::Permit::MeshTls(
            api::authentication::MeshTls {
                identities: vec![],
                suffixes: vec![String::new()],
            },
        )),
    }
}

/// An IP network (`10.0.0.0/8`; a bare address is its /32 or /128), its address bits
/// outside the prefix zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    pub const V4_ALL: Cidr = Cidr {
        addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        prefix_len: 0,
    };
    pub const V6_ALL: Cidr = Cidr {
        addr: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        prefix_len: 0,
    };

    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    fn mask(width: u8, prefix: u8) -> u128 {
        match prefix {
            0 => 0,
            p => (u128::MAX << (128 - u32::from(p))) >> (128 - u32::from(width)),
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let (net, width) = Self::bits(self.addr);
        let (a, w) = Self::bits(addr);
        w == width && a & Self::mask(width, self.prefix_len) == net
    }

    /// Whether `other` lies inside this network.
    pub fn contains_net(&self, other: &Cidr) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.addr)
    }

    pub fn to_ipnet(self) -> api::IpNet {
        api::IpNet {
            ip: Some(self.addr.into()),
            prefix_len: u32::from(self.prefix_len),
        }
    }

    /// This network, with no exceptions, as the API sends it.
    pub fn network(&self) -> api::Network {
        api::Network {
            net: Some(self.to_ipnet()),
            except: vec![],
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a network: expected an IP address, or one and a prefix length (`10.0.0.0/8`, `fd00::/8`)")
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let (bits, width) = Self::bits(addr);
        let prefix_len = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| {
                    format!("{s:?}: the prefix length must be 0-{width} for this address")
                })?,
            Some(_) => return Err(bad()),
        };
        if bits & !Self::mask(width, prefix_len) & (u128::MAX >> (128 - u32::from(width))) != 0 {
            return Err(format!(
                "{s:?} has address bits set past its prefix length: write the network's first address"
            ));
        }
        Ok(Cidr { addr, prefix_len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Linkerd's default cluster networks, with `fd00::/8`.
pub const DEFAULT_CLUSTER_NETWORKS: &str =
    "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";
