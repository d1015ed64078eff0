//! Error conditions on the data path, each a small type named for what happened, and
//! the one place ([`respond`]) that turns an error chain into a synthetic response.
//!
//! Inside the stack errors travel boxed; only the rescue step at the HTTP edge looks
//! at what they are. Each `Display` speaks for its own level; the cause is `source()`.

use http::{HeaderValue, Response, StatusCode};
use std::{net::SocketAddr, time::Duration};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a mesh TLS connection was refused, as counted by `tls_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The peer's certificate names another identity than the one expected.
    WrongIdentity,
    /// The peer's certificate has expired (or is not valid yet).
    Expired,
    /// The peer's certificate does not chain to the trust anchors.
    Untrusted,
    /// A client offered no certificate.
    NoClientCert,
    /// The peer refused this side's certificate or parameters (a TLS alert).
    PeerRefused,
    /// Any other handshake failure: malformed messages, no common parameters.
    Handshake,
    /// The handshake did not finish in time, or the connection broke during it.
    Io,
    /// A plaintext request claimed a mesh identity or spoke the proxies' protocol.
    PlaintextClaim,
}

impl Refused {
    pub const ALL: [Refused; 8] = [
        Self::WrongIdentity,
        Self::Expired,
        Self::Untrusted,
        Self::NoClientCert,
        Self::PeerRefused,
        Self::Handshake,
        Self::Io,
        Self::PlaintextClaim,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongIdentity => "wrong_identity",
            Self::Expired => "expired",
            Self::Untrusted => "untrusted",
            Self::NoClientCert => "no_client_cert",
            Self::PeerRefused => "peer_refused",
            Self::Handshake => "handshake",
            Self::Io => "io",
            Self::PlaintextClaim => "plaintext_claim",
        }
    }
}

/// Why the tap server refused a connection, as counted by `tap_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapRefused {
    /// The client did not start TLS.
    Plaintext,
    /// The handshake failed: no client certificate, one the trust anchors do not
    /// vouch for, or a broken or stalled handshake.
    Handshake,
    /// A valid mesh identity, but not the tap service's.
    Unauthorized,
}

impl TapRefused {
    pub const ALL: [TapRefused; 3] = [Self::Plaintext, Self::Handshake, Self::Unauthorized];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Handshake => "handshake",
            Self::Unauthorized => "unauthorized",
        }
    }
}

/// A mesh TLS handshake that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("mesh TLS handshake with {peer} failed ({reason})", reason = .reason.as_str())]
pub struct HandshakeFailed {
    pub peer: String,
    pub reason: Refused,
    #[source]
    pub source: std::io::Error,
}

/// The proxy's own header on synthetic responses, saying why it answered.
pub const PROXY_ERROR_HEADER: &str = "mesh-proxy-error";

#[derive(Debug, thiserror::Error)]
#[error("connect to {addr} timed out after {}ms", timeout.as_millis())]
pub struct ConnectTimeout {
    pub addr: SocketAddr,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("connect to {addr} failed")]
pub struct ConnectFailed {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug, thiserror::Error)]
#[error("request to {addr} failed")]
pub struct UpstreamFailed {
    pub addr: SocketAddr,
    #[source]
    pub source: hyper::Error,
}

#[derive(Debug, thiserror::Error)]
#[error("refusing to forward to {addr}, the proxy's own listener")]
pub struct LoopDetected {
    pub addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
#[error("could not resolve {authority}")]
pub struct ResolveFailed {
    pub authority: String,
    #[source]
    pub source: Option<std::io::Error>,
}

/// Discovery knows the destination and it has no endpoints: failing is right, sending
/// the request elsewhere would not be.
#[derive(Debug, thiserror::Error)]
#[error("no endpoints for {dst}")]
pub struct NoEndpoints {
    pub dst: std::sync::Arc<str>,
}

/// The client's request body could not be read (a malformed chunk, a connection cut
/// mid-body): the request is the client's fault, whatever the server would have said.
#[derive(Debug, thiserror::Error)]
#[error("the request body failed")]
pub struct RequestBodyFailed {
    #[source]
    pub source: hyper::Error,
}

/// Which of the proxy's limits on a message head was exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadLimit {
    /// More header fields than `MESH_PROXY_HTTP1_MAX_HEADERS`.
    Fields(usize),
    /// More bytes than `MESH_PROXY_HTTP1_MAX_HEADER_BYTES`.
    Bytes(usize),
}

impl HeadLimit {
    /// Which limit hyper's "message head is too large" meant, which it does not say:
    /// `read` bytes of the message had arrived when it gave up. Fewer than the size
    /// limit, and it was certainly the count; more, and it was the size, unless the
    /// bytes were mostly body read along with a head of too many fields (then this
    /// says the size, wrongly: possible only with a size limit below the read size).
    pub fn hit(read: usize, max_fields: usize, max_bytes: usize) -> Self {
        if read >= max_bytes {
            Self::Bytes(max_bytes)
        } else {
            Self::Fields(max_fields)
        }
    }
}

impl std::fmt::Display for HeadLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fields(n) => write!(
                f,
                "more than {n} header fields (MESH_PROXY_HTTP1_MAX_HEADERS)"
            ),
            Self::Bytes(n) => write!(
                f,
                "more than {n} bytes of head (MESH_PROXY_HTTP1_MAX_HEADER_BYTES)"
            ),
        }
    }
}

/// An upstream's HTTP/1 response head exceeded one of the proxy's limits.
#[derive(Debug, thiserror::Error)]
#[error("response from {addr} has {limit}")]
pub struct ResponseHeadTooLarge {
    pub addr: SocketAddr,
    pub limit: HeadLimit,
}

/// A failure decided above the metrics layer (no endpoints, a connection the balancer
/// could not lease, an authority DNS could not resolve), carried down in the request's
/// target so that `Forward` answers it below the metrics, where it is counted like any
/// other. It stands for the error it carries: the chain walkers ([`causes`]) see
/// through it.
#[derive(Clone, Debug)]
pub struct Decided(std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Decided {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(e))
    }
}

impl From<BoxError> for Decided {
    fn from(e: BoxError) -> Self {
        Self(e.into())
    }
}

impl std::fmt::Display for Decided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Decided {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Each error of the chain, outermost first, with a [`Decided`] replaced by the error
/// it carries: the one walker of error chains here.
fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    let unwrap = |e: &'a (dyn std::error::Error + 'static)| match e.downcast_ref::<Decided>() {
        Some(d) => &*d.0 as &(dyn std::error::Error + 'static),
        None => e,
    };
    std::iter::successors(Some(unwrap(err)), move |e| e.source().map(unwrap))
}

/// Whether the chain says that connecting failed, so that nothing was sent.
pub fn is_connect(err: &(dyn std::error::Error + 'static)) -> bool {
    // A refused handshake sent nothing either: the request may go elsewhere.
    causes(err)
        .any(|e| e.is::<ConnectFailed>() || e.is::<ConnectTimeout>() || e.is::<HandshakeFailed>())
}

/// The port's inbound policy does not authorize the request: 403, gRPC
/// `PERMISSION_DENIED`. Says which server and route, so that the client's operator
/// knows which policy to look at.
#[derive(Debug, thiserror::Error)]
#[error("unauthorized request on route {route} of server {server}")]
pub struct Unauthorized {
    /// The policy's server, as `kind/name` (or `group/kind/name`).
    pub server: String,
    pub route: String,
}

/// The port's inbound policy has routes and none matches the request: 404, gRPC
/// `NOT_FOUND`.
#[derive(Debug, thiserror::Error)]
#[error("no route of server {server} matches the request")]
pub struct RouteNotFound {
    pub server: String,
}

/// A route's timeout fired before the response headers arrived.
#[derive(Debug, thiserror::Error)]
#[error("route timeout after {}ms", after.as_millis())]
pub struct RouteTimeout {
    pub after: Duration,
}

/// Marks a response the proxy made itself, with the `error` label metrics give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticResponse(pub &'static str);

/// The `error` label of a response made because the client's request body failed
/// ([`RequestBodyFailed`]): the one synthetic response that is the client's fault.
pub const REQUEST_BODY: &str = "request_body";

/// What a synthetic response says: HTTP status, gRPC status (`None`: answered as plain
/// HTTP even to a gRPC client, whose request is broken at the HTTP level) and metrics
/// label.
fn condition(err: &(dyn std::error::Error + 'static)) -> (StatusCode, Option<u16>, &'static str) {
    let (status, grpc, label) = grpc_condition(err);
    match label {
        REQUEST_BODY => (status, None, label),
        _ => (status, Some(grpc), label),
    }
}

fn grpc_condition(err: &(dyn std::error::Error + 'static)) -> (StatusCode, u16, &'static str) {
    for e in causes(err) {
        // First: a request whose body the client broke fails upstream too (hyper's
        // error wraps ours), but it is the client's doing.
        if e.is::<RequestBodyFailed>() {
            return (StatusCode::BAD_REQUEST, 3, REQUEST_BODY);
        }
        if e.is::<Unauthorized>() {
            return (StatusCode::FORBIDDEN, 7, "unauthorized");
        }
        if e.is::<RouteNotFound>() {
            return (StatusCode::NOT_FOUND, 5, "route_not_found");
        }
        if e.is::<ResponseHeadTooLarge>() {
            return (StatusCode::BAD_GATEWAY, 13, "response_head");
        }
        if e.is::<ConnectTimeout>() || e.is::<RouteTimeout>() {
            return (StatusCode::GATEWAY_TIMEOUT, 4, "timeout");
        }
        if e.is::<ConnectFailed>() {
            return (StatusCode::BAD_GATEWAY, 14, "connect");
        }
        if e.is::<HandshakeFailed>() {
            return (StatusCode::BAD_GATEWAY, 14, "tls");
        }
        if e.is::<LoopDetected>() {
            return (StatusCode::BAD_GATEWAY, 14, "loop");
        }
        if e.is::<ResolveFailed>() {
            return (StatusCode::BAD_GATEWAY, 14, "resolve");
        }
        if e.is::<NoEndpoints>() {
            return (StatusCode::SERVICE_UNAVAILABLE, 14, "no-endpoints");
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return (StatusCode::GATEWAY_TIMEOUT, 4, "timeout");
            }
        }
    }
    (StatusCode::BAD_GATEWAY, 14, "io")
}

/// The first error of type `E` in the chain, as the chain from there on.
fn cause<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    causes(err).find(|e| e.is::<E>())
}

/// The error chain as one line: `outer: inner: root`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = String::new();
    for e in causes(err) {
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&e.to_string());
    }
    s
}

/// Turns an error into the response the client gets: 502, 503 or 504 with a
/// `mesh-proxy-error` header, or for gRPC an HTTP 200 carrying `grpc-status`. The body
/// is empty (its type's default), so that errors need not know the HTTP stack's bodies.
pub fn respond<B: Default>(err: &(dyn std::error::Error + 'static), grpc: bool) -> Response<B> {
    let (status, grpc_code, label) = condition(err);
    // The client's own fault is told from where it began: what the proxy was doing
    // upstream when it happened is not the client's business.
    let msg = match label {
        REQUEST_BODY => chain(cause::<RequestBodyFailed>(err).unwrap_or(err)),
        _ => chain(err),
    };
    // Header values must be visible ASCII; anything else is replaced, not dropped.
    let clean: String = msg
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    let value =
        HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("proxy error"));
    let mut rsp = Response::new(B::default());
    rsp.headers_mut().insert(PROXY_ERROR_HEADER, value.clone());
    rsp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    match grpc_code.filter(|_| grpc) {
        Some(code) => {
            rsp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            rsp.headers_mut()
                .insert("grpc-status", HeaderValue::from(code));
            rsp.headers_mut().insert("grpc-message", value);
        }
        None => *rsp.status_mut() = status,
    }
    rsp.extensions_mut().insert(SyntheticResponse(label));
    rsp
}

/// The response to a plaintext request that claims a mesh identity: 403.
pub fn forbidden<B: Default>(msg: &'static str) -> Response<B> {
    let mut rsp = bad_request(msg);
    *rsp.status_mut() = StatusCode::FORBIDDEN;
    rsp
}

/// A plain synthetic response for requests the proxy cannot route at all.
pub fn bad_request<B: Default>(msg: &'static str) -> Response<B> {
    let mut rsp = Response::new(B::default());
    *rsp.status_mut() = StatusCode::BAD_REQUEST;
    rsp.headers_mut()
        .insert(PROXY_ERROR_HEADER, HeaderValue::from_static(msg));
    rsp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_map_to_statuses() {
        let addr: SocketAddr = "198.18.0.9:80".parse().unwrap();
        let e = ConnectFailed {
            addr,
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let rsp = respond::<()>(&e, false);
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        let h = rsp.headers()[PROXY_ERROR_HEADER].to_str().unwrap();
        assert!(h.starts_with("connect to 198.18.0.9:80 failed: "), "{h}");
        assert_eq!(
            rsp.extensions().get::<SyntheticResponse>(),
            Some(&SyntheticResponse("connect"))
        );

        let e = ConnectTimeout {
            addr,
            timeout: Duration::from_secs(1),
        };
        let rsp = respond::<()>(&e, false);
        assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            rsp.headers()[PROXY_ERROR_HEADER],
            "connect to 198.18.0.9:80 timed out after 1000ms"
        );

        let rsp = respond::<()>(&e, true);
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["grpc-status"], "4");
        let rsp = respond::<()>(&LoopDetected { addr }, true);
        assert_eq!(rsp.headers()["grpc-status"], "14");

        let e = NoEndpoints {
            dst: "web.emojivoto.svc.cluster.local:80".into(),
        };
        let rsp = respond::<()>(&e, false);
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            rsp.headers()[PROXY_ERROR_HEADER],
            "no endpoints for web.emojivoto.svc.cluster.local:80"
        );
        assert_eq!(
            rsp.extensions().get::<SyntheticResponse>(),
            Some(&SyntheticResponse("no-endpoints"))
        );
        assert_eq!(respond::<()>(&e, true).headers()["grpc-status"], "14");
    }

    #[test]
    fn policy_denials_map_to_403_and_404() {
        let e = Unauthorized {
            server: "policy.mesh.rs/server/voting".into(),
            route: "default/default".into(),
        };
        let rsp = respond::<()>(&e, false);
        assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            rsp.headers()[PROXY_ERROR_HEADER],
            "unauthorized request on route default/default of server policy.mesh.rs/server/voting"
        );
        assert_eq!(
            rsp.extensions().get::<SyntheticResponse>(),
            Some(&SyntheticResponse("unauthorized"))
        );
        let rsp = respond::<()>(&e, true);
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["grpc-status"], "7");
        let e = RouteNotFound {
            server: "default/deny".into(),
        };
        assert_eq!(respond::<()>(&e, false).status(), StatusCode::NOT_FOUND);
        assert_eq!(respond::<()>(&e, true).headers()["grpc-status"], "5");
    }

    #[test]
    fn head_limits_say_which_was_hit() {
        assert_eq!(
            HeadLimit::hit(3_000, 100, 64 * 1024),
            HeadLimit::Fields(100)
        );
        assert_eq!(
            HeadLimit::hit(64 * 1024, 100, 64 * 1024),
            HeadLimit::Bytes(64 * 1024)
        );
        let e = ResponseHeadTooLarge {
            addr: "198.18.0.9:80".parse().unwrap(),
            limit: HeadLimit::Fields(100),
        };
        let rsp = respond::<()>(&e, false);
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            rsp.headers()[PROXY_ERROR_HEADER],
            "response from 198.18.0.9:80 has more than 100 header fields (MESH_PROXY_HTTP1_MAX_HEADERS)"
        );
    }
}
