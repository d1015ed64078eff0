//! What a destination path names: a service port, one endpoint of a headless service,
//! an address, or nothing the index could ever know.
//!
//! Parsing is separate from resolution so that a path is parsed once per stream and
//! the parsed [`Target`] is the key under which streams asking the same question
//! share one answer.

use super::ObjKey;
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

/// The port a path without one means, as for HTTP.
pub const DEFAULT_PORT: u16 = 80;

/// The longest DNS name (RFC 1035), without the trailing dot.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A parsed destination path: the key of a live query.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A service's port; with `hostname`, only the endpoints with that slice hostname
    /// (`<hostname>.<svc>.<ns>.svc.<cluster-domain>`).
    Service {
        service: ObjKey,
        port: u16,
        hostname: Option<Arc<str>>,
    },
    /// An `ip:port`: a service's cluster IP, or a pod's IP.
    Addr(SocketAddr),
    /// A well-formed name the index can never resolve (outside the cluster domain, or
    /// a short name without a namespace to expand it with).
    Unknown,
}

/// A path that is not a name or address at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPath {
    #[error("path is empty")]
    Empty,
    #[error("invalid port {0:?}: expected a number from 1 to 65535")]
    Port(String),
    #[error("invalid IPv6 address {0:?}")]
    Ipv6(String),
    #[error("name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("invalid DNS label {0:?}: expected 1 to 63 letters, digits or '-'")]
    Label(String),
}

/// The namespace in a context token (`{"ns":"<namespace>",...}`), if any.
///
/// A token that is not such JSON is treated as absent rather than rejected: it only
/// ever widens what short names mean, and a proxy must not lose discovery over it.
pub fn context_namespace(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Token {
        ns: Option<String>,
    }
    if token.is_empty() {
        return None;
    }
    let token: Token = serde_json::from_str(token).ok()?;
    token.ns.filter(|ns| !ns.is_empty())
}

/// Parses a destination path (see `GetDestination.path` in the proto).
pub fn parse_path(
    path: &str,
    context_ns: Option<&str>,
    cluster_domain: &str,
) -> Result<Target, InvalidPath> {
    if path.is_empty() {
        return Err(InvalidPath::Empty);
    }

    // Addresses first: `[ip6]:port`, `[ip6]`, `ip:port`, or a bare IP.
    if let Some(rest) = path.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| InvalidPath::Ipv6(path.to_string()))?;
        let ip: IpAddr = ip.parse().map_err(|_| InvalidPath::Ipv6(ip.to_string()))?;
        let port = match after {
            "" => DEFAULT_PORT,
            _ => match after.strip_prefix(':') {
                Some(port) => parse_port(port)?,
                None => return Err(InvalidPath::Ipv6(path.to_string())),
            },
        };
        return Ok(Target::Addr(SocketAddr::new(ip, port)));
    }
    if let Ok(ip) = path.parse::<IpAddr>() {
        return Ok(Target::Addr(SocketAddr::new(ip, DEFAULT_PORT)));
    }

    let (host, port) = match path.rsplit_once(':') {
        Some((host, port)) => (host, parse_port(port)?),
        None => (path, DEFAULT_PORT),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        if ip.is_ipv6() {
            // `2001:db8::1:80` is ambiguous; IPv6 with a port needs brackets.
            return Err(InvalidPath::Ipv6(path.to_string()));
        }
        return Ok(Target::Addr(SocketAddr::new(ip, port)));
    }

    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidPath::TooLong);
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        let valid = !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(InvalidPath::Label(label.to_string()));
        }
    }

    let service = |svc: &str, ns: &str, hostname: Option<&str>| Target::Service {
        service: ObjKey::new(ns, svc),
        port,
        hostname: hostname.map(Arc::from),
    };

    // `<...>.svc.<cluster-domain>` or `<...>.svc`: the part before names a service.
    let domain: Vec<&str> = cluster_domain
        .trim_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
        .collect();
    let in_cluster = strip_labels_suffix(&labels, &domain)
        .and_then(|rest| strip_labels_suffix(rest, &["svc"]))
        .or_else(|| strip_labels_suffix(&labels, &["svc"]));
    if let Some(rest) = in_cluster {
        return Ok(match *rest {
            [svc, ns] => service(svc, ns, None),
            [hostname, svc, ns] => service(svc, ns, Some(hostname)),
            _ => Target::Unknown,
        });
    }

    Ok(match (labels.as_slice(), context_ns) {
        ([svc], Some(ns)) => service(svc, &ns.to_ascii_lowercase(), None),
        ([svc, ns], _) => service(svc, ns, None),
        _ => Target::Unknown,
    })
}

fn parse_port(port: &str) -> Result<u16, InvalidPath> {
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(InvalidPath::Port(port.to_string())),
    }
}

/// `labels` without `suffix` at its end, if it ends so and something is left.
fn strip_labels_suffix<'a, 'b>(labels: &'a [&'b str], suffix: &[&str]) -> Option<&'a [&'b str]> {
    if labels.len() <= suffix.len() {
        return None;
    }
    let (rest, tail) = labels.split_at(labels.len() - suffix.len());
    (tail == suffix).then_some(rest)
}
