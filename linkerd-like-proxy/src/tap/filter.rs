//! A tap stream's filter: the `ObserveRequest.match` tree, checked once when the
//! stream starts (every error named) and then evaluated per request without
//! allocating.

use http::Method;
use mesh_api::tap::observe_request::{
    r#match::{self as proto, http::Match as HttpProto, tcp::Match as TcpProto},
    Match as MatchProto,
};
use std::net::{IpAddr, SocketAddr};

/// How deep a match tree may nest: deeper is refused rather than evaluated.
const MAX_DEPTH: usize = 16;

/// A match a client sent that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InvalidMatch {
    #[error("a match has no condition")]
    Empty,
    #[error("a netmask has no valid address")]
    Address,
    #[error("netmask /{mask} is longer than its address")]
    Mask { mask: u32 },
    #[error("port range {min}-{max} is not within 1-65535, lowest first")]
    Ports { min: u32, max: u32 },
    #[error("{0:?} is not an HTTP method")]
    Method(String),
    #[error("a string match has neither `exact` nor `prefix`")]
    String,
    #[error("matches nest deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// A compiled filter.
#[derive(Debug)]
pub(crate) enum Match {
    All(Vec<Match>),
    Any(Vec<Match>),
    Not(Box<Match>),
    Source(Tcp),
    Destination(Tcp),
    DestinationLabel { key: String, value: String },
    Scheme(String),
    Method(Method),
    Authority(StringMatch),
    Path(StringMatch),
    Route(String),
}

#[derive(Debug)]
pub(crate) enum Tcp {
    Net { ip: IpAddr, mask: u32 },
    Ports { min: u16, max: u16 },
}

#[derive(Debug)]
pub(crate) enum StringMatch {
    Exact(String),
    Prefix(String),
}

/// What a filter sees of a request.
pub(crate) struct View<'a> {
    pub(crate) source: SocketAddr,
    pub(crate) destination: SocketAddr,
    /// The destination's rendered `dst_*` labels, read only by a label match.
    pub(crate) labels: Option<&'a str>,
    pub(crate) method: &'a Method,
    pub(crate) scheme: &'a str,
    pub(crate) authority: &'a str,
    pub(crate) path: &'a str,
    /// Empty on the default route.
    pub(crate) route: &'a str,
}

impl Match {
    /// Compiles a client's match; none matches every request.
    pub(crate) fn compile(m: Option<&MatchProto>) -> Result<Self, InvalidMatch> {
        match m {
            None => Ok(Self::All(Vec::new())),
            Some(m) => Self::compile_at(m, 0),
        }
    }

    fn compile_at(m: &MatchProto, depth: usize) -> Result<Self, InvalidMatch> {
        if depth > MAX_DEPTH {
            return Err(InvalidMatch::TooDeep);
        }
        let seq = |s: &proto::Seq| {
            s.matches
                .iter()
                .map(|m| Self::compile_at(m, depth + 1))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match m.r#match.as_ref().ok_or(InvalidMatch::Empty)? {
            proto::Match::All(s) => Self::All(seq(s)?),
            proto::Match::Any(s) => Self::Any(seq(s)?),
            proto::Match::Not(m) => Self::Not(Box::new(Self::compile_at(m, depth + 1)?)),
            proto::Match::Source(t) => Self::Source(Tcp::compile(t)?),
            proto::Match::Destination(t) => Self::Destination(Tcp::compile(t)?),
            proto::Match::DestinationLabel(l) => Self::DestinationLabel {
                key: l.key.clone(),
                value: l.value.clone(),
            },
            proto::Match::Http(h) => match h.r#match.as_ref().ok_or(InvalidMatch::Empty)? {
                HttpProto::Scheme(s) => Self::Scheme(s.clone()),
                HttpProto::Method(m) => Self::Method(
                    Method::from_bytes(m.as_bytes())
                        .map_err(|_| InvalidMatch::Method(m.clone()))?,
                ),
                HttpProto::Authority(s) => Self::Authority(StringMatch::compile(s)?),
                HttpProto::Path(s) => Self::Path(StringMatch::compile(s)?),
                HttpProto::Route(r) => Self::Route(r.clone()),
            },
        })
    }

    pub(crate) fn matches(&self, r: &View<'_>) -> bool {
        match self {
            Self::All(ms) => ms.iter().all(|m| m.matches(r)),
            Self::Any(ms) => ms.iter().any(|m| m.matches(r)),
            Self::Not(m) => !m.matches(r),
            Self::Source(t) => t.matches(r.source),
            Self::Destination(t) => t.matches(r.destination),
            Self::DestinationLabel { key, value } => {
                let labels = r.labels.map(super::parse_labels).unwrap_or_default();
                labels.iter().any(|(k, v)| k == key && v == value)
            }
            Self::Scheme(s) => r.scheme.eq_ignore_ascii_case(s),
            Self::Method(m) => r.method == m,
            // Authorities are host names: ASCII case does not matter.
            Self::Authority(s) => s.matches(r.authority, true),
            Self::Path(s) => s.matches(r.path, false),
            Self::Route(name) => r.route == name.as_str(),
        }
    }
}

impl Tcp {
    fn compile(t: &proto::Tcp) -> Result<Self, InvalidMatch> {
        match t.r#match.as_ref().ok_or(InvalidMatch::Empty)? {
            TcpProto::Netmask(n) => {
                let ip =
                    n.ip.as_ref()
                        .and_then(|ip| IpAddr::try_from(ip).ok())
                        .ok_or(InvalidMatch::Address)?;
                let bits = if ip.is_ipv4() { 32 } else { 128 };
                if n.mask > bits {
                    return Err(InvalidMatch::Mask { mask: n.mask });
                }
                Ok(Self::Net { ip, mask: n.mask })
            }
            TcpProto::Ports(p) => {
                let max = if p.max == 0 { p.min } else { p.max };
                let port = |n: u32| u16::try_from(n).ok().filter(|n| *n != 0);
                match (port(p.min), port(max)) {
                    (Some(min), Some(max)) if min <= max => Ok(Self::Ports { min, max }),
                    _ => Err(InvalidMatch::Ports { min: p.min, max }),
                }
            }
        }
    }

    fn matches(&self, addr: SocketAddr) -> bool {
        match *self {
            Self::Ports { min, max } => (min..=max).contains(&addr.port()),
            Self::Net { ip, mask } => match (ip, addr.ip()) {
                (IpAddr::V4(net), IpAddr::V4(a)) => {
                    let keep = u32::MAX.checked_shl(32 - mask).unwrap_or(0);
                    u32::from(net) & keep == u32::from(a) & keep
                }
                (IpAddr::V6(net), IpAddr::V6(a)) => {
                    let keep = u128::MAX.checked_shl(128 - mask).unwrap_or(0);
                    u128::from(net) & keep == u128::from(a) & keep
                }
                _ => false,
            },
        }
    }
}

impl StringMatch {
    fn compile(s: &proto::StringMatch) -> Result<Self, InvalidMatch> {
        use proto::string_match::Match as S;
        match s.r#match.as_ref().ok_or(InvalidMatch::String)? {
            S::Exact(e) => Ok(Self::Exact(e.clone())),
            S::Prefix(p) => Ok(Self::Prefix(p.clone())),
        }
    }

    fn matches(&self, s: &str, ignore_case: bool) -> bool {
        let (s, want) = match self {
            Self::Exact(e) if s.len() != e.len() => return false,
            Self::Exact(e) => (s.as_bytes(), e.as_bytes()),
            Self::Prefix(p) => match s.as_bytes().get(..p.len()) {
                Some(head) => (head, p.as_bytes()),
                None => return false,
            },
        };
        if ignore_case {
            s.eq_ignore_ascii_case(want)
        } else {
            s == want
        }
    }
}
