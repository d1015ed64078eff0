//! The proxy's configuration: `MESH_PROXY_*` environment variables, parsed and
//! validated into a typed [`Config`] before anything binds or connects.
//!
//! Every variable the proxy reads is declared in this module, with its default.
//! Parsing goes through the [`Env`] trait so tests can pass a `HashMap` instead of
//! touching the process environment.

use mesh_api::{control_plane, duration, names};
use std::{collections::BTreeSet, fmt, net::SocketAddr, time::Duration};

/// Where configuration values come from.
pub trait Env {
    /// Returns the value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        std::collections::HashMap::get(self, key).cloned()
    }
}

impl Env for std::collections::HashMap<&str, &str> {
    fn get(&self, key: &str) -> Option<String> {
        std::collections::HashMap::get(self, key).map(|v| (*v).to_string())
    }
}

/// Outbound listener. Default `127.0.0.1:4140`: iptables redirects the pod's
/// outgoing TCP here; in explicit mode it is the pod's HTTP proxy.
pub const ENV_OUTBOUND_LISTEN_ADDR: &str = "MESH_PROXY_OUTBOUND_LISTEN_ADDR";
/// Inbound listener. Default `0.0.0.0:4143`: iptables redirects the pod's incoming
/// TCP here.
pub const ENV_INBOUND_LISTEN_ADDR: &str = "MESH_PROXY_INBOUND_LISTEN_ADDR";
/// Admin listener (`/metrics`, `/ready`, `/live`, `/shutdown`). Default `0.0.0.0:4191`
/// so that the controller or a Prometheus can scrape the pod; everything but
/// `/metrics`, `/ready` and `/live` answers loopback clients only.
pub const ENV_ADMIN_LISTEN_ADDR: &str = "MESH_PROXY_ADMIN_LISTEN_ADDR";
/// Explicit mode: where inbound connections that were not redirected by iptables are
/// forwarded (the local application, e.g. `127.0.0.1:8080`). Unset by default: such
/// connections are closed.
pub const ENV_INBOUND_FORWARD_ADDR: &str = "MESH_PROXY_INBOUND_FORWARD_ADDR";
/// How long protocol detection waits for the client's first bytes before treating
/// the connection as opaque TCP. Default `1s` (Linkerd: 10s).
pub const ENV_DETECT_TIMEOUT: &str = "MESH_PROXY_DETECT_TIMEOUT";
/// Upstream TCP connect timeout. Default `1s`.
pub const ENV_CONNECT_TIMEOUT: &str = "MESH_PROXY_CONNECT_TIMEOUT";
/// Extra ports (comma-separated, ranges as `a-b`) that skip protocol detection and are
/// proxied as opaque TCP, in addition to the server-speaks-first defaults. Default empty.
pub const ENV_OPAQUE_PORTS: &str = "MESH_PROXY_OPAQUE_PORTS";
/// How long in-flight requests and streams may take to finish after SIGTERM or
/// `/shutdown` before the proxy exits anyway. Default `30s`.
pub const ENV_SHUTDOWN_GRACE_PERIOD: &str = "MESH_PROXY_SHUTDOWN_GRACE_PERIOD";
/// How long an idle pooled upstream connection is kept. Default `10s`.
pub const ENV_POOL_IDLE_TIMEOUT: &str = "MESH_PROXY_POOL_IDLE_TIMEOUT";
/// Largest HTTP/1 message head (request or response line and header fields) the
/// proxy reads. Default `408KiB`, hyper's own default and so Linkerd's: a request over
/// it gets 431, a response over it becomes a 502 naming this variable. From `8KiB` to
/// `16MiB`.
pub const ENV_HTTP1_MAX_HEADER_BYTES: &str = "MESH_PROXY_HTTP1_MAX_HEADER_BYTES";
/// Most header fields in one HTTP/1 message head. Default `100`, as Linkerd, Envoy and
/// hyper: a request with more gets 431, a response with more becomes a 502 naming this
/// variable. Any other value costs a heap allocation per message head (hyper keeps the
/// default's fields on the stack). From 1 to 10000.
pub const ENV_HTTP1_MAX_HEADERS: &str = "MESH_PROXY_HTTP1_MAX_HEADERS";
/// Largest HTTP/2 header list (the sum over fields of name, value and 32 bytes, as
/// RFC 9113 counts it) the proxy accepts, in requests and in responses. Default
/// `16MiB`, what Linkerd's proxy accepts. It must hold any HTTP/1 head the proxy
/// accepts, since HTTP/1 travels between proxies as HTTP/2:
/// at least `MESH_PROXY_HTTP1_MAX_HEADER_BYTES` + 32 × `MESH_PROXY_HTTP1_MAX_HEADERS`.
pub const ENV_HTTP2_MAX_HEADER_LIST_BYTES: &str = "MESH_PROXY_HTTP2_MAX_HEADER_LIST_BYTES";
/// How long a client may take to send a complete HTTP/1 request head. Default `10s`.
pub const ENV_HTTP1_HEADER_READ_TIMEOUT: &str = "MESH_PROXY_HTTP1_HEADER_READ_TIMEOUT";
/// Whether inbound metrics carry the `authority` label. Default off, since any client
/// could otherwise create unbounded series; `unsafe` turns it on.
pub const ENV_INBOUND_METRICS_AUTHORITY_LABELS: &str =
    "MESH_PROXY_INBOUND_METRICS_AUTHORITY_LABELS";
/// How long a metric series that nothing uses is kept before it is dropped. Default
/// `10m` (as Linkerd). Keeps targets and authorities seen once from costing memory
/// forever.
pub const ENV_METRICS_RETAIN_IDLE: &str = "MESH_PROXY_METRICS_RETAIN_IDLE";
/// How many HTTP series, and how many TCP series, the proxy keeps at most (default
/// [`crate::metrics::DEFAULT_MAX_SERIES`]); traffic beyond goes to overflow series.
pub const ENV_METRICS_MAX_SERIES: &str = "MESH_PROXY_METRICS_MAX_SERIES";
/// The destination service (`host:port` of the controller's gRPC server, e.g.
/// `mesh-destination.mesh-system.svc.cluster.local:8086`). Unset by default: no
/// discovery, every connection and request goes where the client sent it.
pub const ENV_DESTINATION_ADDR: &str = "MESH_PROXY_DESTINATION_ADDR";
/// Who this proxy is, sent with every lookup as `context_token`: a JSON object such as
/// `{"ns":"emojivoto","pod":"web-0"}` (the controller expands short names with `ns`).
/// Default empty.
pub const ENV_DESTINATION_CONTEXT: &str = "MESH_PROXY_DESTINATION_CONTEXT";
/// How long the first request or connection to a destination the proxy has not looked
/// up yet waits for the destination service's first answer before it is sent where
/// the client sent it (the original destination, or in explicit mode the DNS answer).
/// Default `1s`: the controller answers in about a millisecond, so the wait matters
/// only when it is slow or gone; then one stalled first request per destination is
/// better than a wrong answer (in explicit mode a cluster name often has no DNS), and
/// 1s stays below the timeouts clients commonly set. Later requests never wait.
pub const ENV_DISCOVERY_TIMEOUT: &str = "MESH_PROXY_DISCOVERY_TIMEOUT";
/// A destination not used for this long has its lookup stream closed and its
/// endpoints and load estimates dropped. Default `60s`.
pub const ENV_DISCOVERY_IDLE_TIMEOUT: &str = "MESH_PROXY_DISCOVERY_IDLE_TIMEOUT";
/// The identity service (`host:port` of the controller's identity gRPC server, e.g.
/// `mesh-identity.mesh-system.svc.cluster.local:8080`). Unset by default: identity is
/// off, the proxy holds no certificate and `/ready` does not wait for one. When set,
/// `MESH_PROXY_IDENTITY_NAME`, `MESH_PROXY_IDENTITY_TOKEN_FILE` and
/// `MESH_PROXY_IDENTITY_TRUST_ANCHORS` are required.
pub const ENV_IDENTITY_ADDR: &str = "MESH_PROXY_IDENTITY_ADDR";
/// This proxy's identity, the DNS name its certificate is for:
/// `<serviceaccount>.<namespace>.serviceaccount.identity.mesh.<trust-domain>`.
/// No default; required with `MESH_PROXY_IDENTITY_ADDR`.
pub const ENV_IDENTITY_NAME: &str = "MESH_PROXY_IDENTITY_NAME";
/// The identity the identity service's certificate must name: `Certify` goes over
/// TLS verified against the trust anchors, and the token is sent only to this name.
/// Default `mesh-identity.mesh-system.serviceaccount.identity.mesh.<trust-domain>`,
/// the trust domain taken from `MESH_PROXY_IDENTITY_NAME`.
pub const ENV_IDENTITY_SVC_NAME: &str = "MESH_PROXY_IDENTITY_SVC_NAME";
/// With identity on, discovery goes over TLS too, and the destination service's
/// certificate must name this identity. Default
/// `mesh-destination.mesh-system.serviceaccount.identity.mesh.<trust-domain>`.
pub const ENV_DESTINATION_SVC_NAME: &str = "MESH_PROXY_DESTINATION_SVC_NAME";
/// A file holding the token that proves the identity (a projected service-account
/// token in a cluster, a bootstrap token locally), sent with every certificate
/// request. Re-read at every request, since projected tokens rotate; surrounding
/// whitespace is ignored. No default; required with `MESH_PROXY_IDENTITY_ADDR`.
pub const ENV_IDENTITY_TOKEN_FILE: &str = "MESH_PROXY_IDENTITY_TOKEN_FILE";
/// The trust anchors, as PEM given inline in the variable (as Linkerd does, so no
/// file has to be mounted): one or more `CERTIFICATE` blocks. The certificate the
/// identity service returns must chain to one of them. No default; required with
/// `MESH_PROXY_IDENTITY_ADDR`.
pub const ENV_IDENTITY_TRUST_ANCHORS: &str = "MESH_PROXY_IDENTITY_TRUST_ANCHORS";
/// The shortest wait before renewing the certificate, or before retrying after a
/// failure. Default `10s`.
pub const ENV_IDENTITY_MIN_REFRESH: &str = "MESH_PROXY_IDENTITY_MIN_REFRESH";
/// The longest wait before renewing the certificate, or before retrying after a
/// failure. Default `24h`. The certificate is renewed at 70% of its remaining
/// lifetime, clamped to these bounds.
pub const ENV_IDENTITY_MAX_REFRESH: &str = "MESH_PROXY_IDENTITY_MAX_REFRESH";
/// The tap server's listener (`mesh.tap.Tap/Observe`, mesh TLS only). Default
/// `0.0.0.0:4190` (Linkerd's tap port), so that the control plane's tap service can
/// reach the pod. The tap server runs only with identity on
/// (`MESH_PROXY_IDENTITY_ADDR`): it serves one client identity, and needs mesh TLS
/// to know who is asking.
pub const ENV_TAP_LISTEN_ADDR: &str = "MESH_PROXY_TAP_LISTEN_ADDR";
/// The one client identity the tap server serves. Default
/// `mesh-tap.mesh-system.serviceaccount.identity.mesh.<trust-domain>`, the control
/// plane's tap service, the trust domain taken from `MESH_PROXY_IDENTITY_NAME`.
pub const ENV_TAP_SVC_NAME: &str = "MESH_PROXY_TAP_SVC_NAME";
/// Header names whose values tap never shows (comma-separated, ASCII case ignored),
/// besides `authorization`, `cookie`, `set-cookie` and `proxy-authorization`, which
/// it never shows either. Default empty.
pub const ENV_TAP_REDACT_HEADERS: &str = "MESH_PROXY_TAP_REDACT_HEADERS";
/// The most requests per second one tap stream taps; further requests its filter
/// matches are not tapped, and are counted in `tap_rate_limited_total`. Default
/// [`DEFAULT_TAP_MAX_RPS`]. From 1 to 10000.
pub const ENV_TAP_MAX_RPS: &str = "MESH_PROXY_TAP_MAX_RPS";
/// `MESH_PROXY_TAP_MAX_RPS`'s default: 100, the rate Linkerd's tap API allows a
/// whole tap by default, so one stream at it costs the proxy a few percent of CPU at
/// most.
pub const DEFAULT_TAP_MAX_RPS: u32 = 100;
/// The workload whose inbound policy the proxy enforces, as JSON
/// `{"ns":"<namespace>","pod":"<pod>"}`. No default: without it policy is off, and
/// the proxy lets everything in, as before (at no cost per request). With it,
/// `MESH_PROXY_DESTINATION_ADDR` is required: the policy service
/// (`mesh.policy.InboundPolicies`) is served beside the destination service, over the
/// same TLS. The proxy's admin port is not subject to policy: the kubelet's `/live`
/// and `/ready` probes reach it under any policy.
pub const ENV_POLICY_WORKLOAD: &str = "MESH_PROXY_POLICY_WORKLOAD";
/// The inbound policy applied to a port until the controller answers for it, and for
/// good if it never does: `all-unauthenticated` (the default), `all-authenticated`,
/// `cluster-authenticated`, `cluster-unauthenticated`, `deny` or `audit`.
pub const ENV_INBOUND_DEFAULT_POLICY: &str = "MESH_PROXY_INBOUND_DEFAULT_POLICY";
/// The cluster's networks, for the `cluster-*` default policies: comma-separated
/// CIDRs. Default `10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8`
/// (Linkerd's).
pub const ENV_POLICY_CLUSTER_NETWORKS: &str = "MESH_PROXY_POLICY_CLUSTER_NETWORKS";
/// The inbound ports whose policy is watched from start-up (the pod's container
/// ports), written as `MESH_PROXY_OPAQUE_PORTS` is. Default: none; any other port is
/// watched from its first connection.
pub const ENV_INBOUND_PORTS: &str = "MESH_PROXY_INBOUND_PORTS";
/// How long the first connections to a port not in `MESH_PROXY_INBOUND_PORTS` wait
/// for the controller's policy before the default applies. Default `1s`.
pub const ENV_POLICY_TIMEOUT: &str = "MESH_PROXY_POLICY_TIMEOUT";
/// Exit when the process with this pid, which must be this proxy's parent, exits,
/// however it exits (Linux's parent-death signal): for supervisors such as `mesh demo`
/// that run proxies as children and must not leave them behind. Unset by default.
pub const ENV_PARENT_PID: &str = "MESH_PROXY_PARENT_PID";
/// Worker threads. Default `1`: a sidecar should not compete with its application.
pub const ENV_CORES: &str = "MESH_PROXY_CORES";
/// Log filter, in `tracing_subscriber::EnvFilter` syntax. Default `warn,mesh_proxy=info`.
pub const ENV_LOG: &str = "MESH_PROXY_LOG";

const KNOWN: &[&str] = &[
    ENV_OUTBOUND_LISTEN_ADDR,
    ENV_INBOUND_LISTEN_ADDR,
    ENV_ADMIN_LISTEN_ADDR,
    ENV_INBOUND_FORWARD_ADDR,
    ENV_DETECT_TIMEOUT,
    ENV_CONNECT_TIMEOUT,
    ENV_OPAQUE_PORTS,
    ENV_SHUTDOWN_GRACE_PERIOD,
    ENV_POOL_IDLE_TIMEOUT,
    ENV_HTTP1_MAX_HEADER_BYTES,
    ENV_HTTP1_MAX_HEADERS,
    ENV_HTTP2_MAX_HEADER_LIST_BYTES,
    ENV_HTTP1_HEADER_READ_TIMEOUT,
    ENV_INBOUND_METRICS_AUTHORITY_LABELS,
    ENV_METRICS_RETAIN_IDLE,
    ENV_METRICS_MAX_SERIES,
    ENV_DESTINATION_ADDR,
    ENV_DESTINATION_CONTEXT,
    ENV_DISCOVERY_TIMEOUT,
    ENV_DISCOVERY_IDLE_TIMEOUT,
    ENV_IDENTITY_ADDR,
    ENV_IDENTITY_NAME,
    ENV_IDENTITY_SVC_NAME,
    ENV_DESTINATION_SVC_NAME,
    ENV_IDENTITY_TOKEN_FILE,
    ENV_IDENTITY_TRUST_ANCHORS,
    ENV_IDENTITY_MIN_REFRESH,
    ENV_IDENTITY_MAX_REFRESH,
    ENV_TAP_LISTEN_ADDR,
    ENV_TAP_SVC_NAME,
    ENV_TAP_REDACT_HEADERS,
    ENV_TAP_MAX_RPS,
    ENV_POLICY_WORKLOAD,
    ENV_INBOUND_DEFAULT_POLICY,
    ENV_POLICY_CLUSTER_NETWORKS,
    ENV_INBOUND_PORTS,
    ENV_POLICY_TIMEOUT,
    ENV_PARENT_PID,
    ENV_CORES,
    ENV_LOG,
];

/// Ports whose servers speak first (SMTP, MySQL, Galera, PostgreSQL, Redis,
/// Elasticsearch transport, memcached): detection would only stall them.
pub const DEFAULT_OPAQUE_PORTS: &[u16] = &[25, 587, 3306, 4444, 5432, 6379, 9300, 11211];

/// The validated proxy configuration, in the parts its users take: each part of the
/// proxy is given the part it needs, never the whole. Building it has no side effects.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: ListenConfig,
    pub http: HttpConfig,
    /// The destination service's client; `None`: no discovery.
    pub discovery: Option<DiscoveryConfig>,
    /// The identity client's settings; `None`: identity is off.
    pub identity: Option<IdentityConfig>,
    /// The tap server's settings; `None`: no tap server (identity is off).
    pub tap: Option<TapConfig>,
    /// Present when `MESH_PROXY_POLICY_WORKLOAD` is set.
    pub policy: Option<PolicyConfig>,
    /// How long a metric series with no traffic is kept.
    pub metrics_retain_idle: Duration,
    /// How many HTTP series, and how many TCP series, are kept at most.
    pub metrics_max_series: usize,
    /// The supervisor this proxy must not outlive, if any.
    pub parent_pid: Option<u32>,
    pub cores: usize,
    pub log: String,
}

/// What the proxy listens on, and how it tells what a connection carries.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    pub outbound_addr: SocketAddr,
    pub inbound_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Where inbound connections go instead of their original destination (a VM or a
    /// test without iptables).
    pub inbound_forward_addr: Option<SocketAddr>,
    pub detect_timeout: Duration,
    pub opaque_ports: BTreeSet<u16>,
    pub shutdown_grace_period: Duration,
}

/// Upstream connections and HTTP: limits, timeouts, pooling, labels. (Opaque TCP
/// shares the connect timeout.)
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub http1_max_header_bytes: usize,
    pub http1_max_headers: usize,
    pub http2_max_header_list_bytes: u32,
    pub http1_header_read_timeout: Duration,
    pub inbound_authority_labels: bool,
}

/// The destination service's client, present when `MESH_PROXY_DESTINATION_ADDR` is set.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// The destination service, as `http://host:port/`.
    pub addr: http::Uri,
    /// Sent with every lookup (a JSON object, or empty).
    pub context: String,
    pub timeout: Duration,
    pub idle_timeout: Duration,
}

/// The inbound policy client's settings, present when `MESH_PROXY_POLICY_WORKLOAD` is
/// set.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// `{"ns","pod"}` JSON, sent as is in each `Watch`.
    pub workload: String,
    pub default: crate::policy::DefaultPolicy,
    pub cluster_networks: Vec<crate::policy::Cidr>,
    /// Watched from start-up.
    pub ports: BTreeSet<u16>,
    pub timeout: Duration,
}

impl PolicyConfig {
    /// The compiled default policy.
    pub fn default_policy(&self) -> Result<crate::policy::Policy, String> {
        let msg = self.default.inbound_policy(&self.cluster_networks);
        crate::policy::Policy::from_proto(&msg).map_err(|e| e.to_string())
    }
}

/// The identity client's settings, present when `MESH_PROXY_IDENTITY_ADDR` is set.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// The identity service, as `http://host:port/`.
    pub addr: http::Uri,
    /// This proxy's identity name (a DNS name).
    pub name: String,
    /// The identity service's identity name, which its certificate must name.
    pub server_name: String,
    /// The destination service's identity name: with identity on, discovery is TLS.
    pub destination_name: String,
    pub token_file: std::path::PathBuf,
    /// The trust anchors' certificates, DER, each known to be usable as an anchor.
    pub trust_anchors: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
}

/// The tap server's settings, present when identity is on.
#[derive(Clone, Debug)]
pub struct TapConfig {
    pub listen_addr: SocketAddr,
    /// The one client identity served (lowercase).
    pub client_name: String,
    /// Header names whose values are never shown, besides the four tap never shows.
    pub redact_headers: Vec<http::HeaderName>,
    /// The most requests per second one stream taps.
    pub max_rps: u32,
}

/// A variable whose value could not be used.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates every `MESH_PROXY_*` variable.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let addr = |var, default: &str| {
            parse(env, var, default, "an address like 127.0.0.1:4140", |v| {
                v.parse::<SocketAddr>().ok()
            })
        };
        let dur = |var, default: &str| {
            parse(
                env,
                var,
                default,
                "a duration like 500ms, 2s or 1m30s (Go's syntax: ns, us, ms, s, m, h)",
                |v| duration::parse(v).ok(),
            )
        };

        let mut opaque_ports: BTreeSet<u16> = DEFAULT_OPAQUE_PORTS.iter().copied().collect();
        opaque_ports.extend(parse(
            env,
            ENV_OPAQUE_PORTS,
            "",
            "comma-separated ports or ranges like 4000-4010",
            parse_ports,
        )?);

        let identity = identity(env)?;
        let tap = tap(env, identity.as_ref())?;
        let discovery = discovery(env)?;
        let policy = policy(env, discovery.is_some())?;
        let config = Config {
            listen: ListenConfig {
                outbound_addr: addr(ENV_OUTBOUND_LISTEN_ADDR, "127.0.0.1:4140")?,
                inbound_addr: addr(ENV_INBOUND_LISTEN_ADDR, "0.0.0.0:4143")?,
                admin_addr: addr(ENV_ADMIN_LISTEN_ADDR, "0.0.0.0:4191")?,
                inbound_forward_addr: match env
                    .get(ENV_INBOUND_FORWARD_ADDR)
                    .filter(|v| !v.is_empty())
                {
                    None => None,
                    Some(_) => Some(addr(ENV_INBOUND_FORWARD_ADDR, "")?),
                },
                detect_timeout: dur(ENV_DETECT_TIMEOUT, "1s")?,
                opaque_ports,
                shutdown_grace_period: dur(ENV_SHUTDOWN_GRACE_PERIOD, "30s")?,
            },
            http: HttpConfig {
                connect_timeout: dur(ENV_CONNECT_TIMEOUT, "1s")?,
                pool_idle_timeout: dur(ENV_POOL_IDLE_TIMEOUT, "10s")?,
                http1_max_header_bytes: parse(
                    env,
                    ENV_HTTP1_MAX_HEADER_BYTES,
                    "408KiB",
                    "a size from 8KiB to 16MiB, like 408KiB",
                    |v| parse_size(v).filter(|n| (8 * 1024..=16 * 1024 * 1024).contains(n)),
                )?,
                http1_max_headers: parse(
                    env,
                    ENV_HTTP1_MAX_HEADERS,
                    "100",
                    "a number of header fields from 1 to 10000",
                    |v| v.parse::<usize>().ok().filter(|n| (1..=10_000).contains(n)),
                )?,
                http2_max_header_list_bytes: parse(
                    env,
                    ENV_HTTP2_MAX_HEADER_LIST_BYTES,
                    "16MiB",
                    "a size from 16KiB to 64MiB, like 16MiB",
                    |v| {
                        parse_size(v)
                            .filter(|n| (16 * 1024..=64 * 1024 * 1024).contains(n))
                            .and_then(|n| u32::try_from(n).ok())
                    },
                )?,
                http1_header_read_timeout: dur(ENV_HTTP1_HEADER_READ_TIMEOUT, "10s")?,
                inbound_authority_labels: parse(
                    env,
                    ENV_INBOUND_METRICS_AUTHORITY_LABELS,
                    "",
                    "empty or \"unsafe\"",
                    |v| match v {
                        "" => Some(false),
                        "unsafe" => Some(true),
                        _ => None,
                    },
                )?,
            },
            discovery,
            policy,
            metrics_retain_idle: dur(ENV_METRICS_RETAIN_IDLE, "10m")?,
            metrics_max_series: parse(
                env,
                ENV_METRICS_MAX_SERIES,
                &crate::metrics::DEFAULT_MAX_SERIES.to_string(),
                "a number of series from 10 to 1000000",
                |v| {
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (10..=1_000_000).contains(n))
                },
            )?,
            identity,
            tap,
            parent_pid: match env.get(ENV_PARENT_PID).filter(|v| !v.trim().is_empty()) {
                None => None,
                Some(_) => Some(parse(
                    env,
                    ENV_PARENT_PID,
                    "",
                    "the pid of this proxy's parent process",
                    |v| v.parse::<u32>().ok().filter(|p| *p > 1),
                )?),
            },
            cores: parse(
                env,
                ENV_CORES,
                "1",
                "a number of threads from 1 to 64",
                |v| v.parse::<usize>().ok().filter(|n| (1..=64).contains(n)),
            )?,
            log: env
                .get(ENV_LOG)
                .unwrap_or_else(|| "warn,mesh_proxy=info".to_string()),
        };
        for (var, d) in [
            (ENV_DETECT_TIMEOUT, config.listen.detect_timeout),
            (ENV_CONNECT_TIMEOUT, config.http.connect_timeout),
            (
                ENV_HTTP1_HEADER_READ_TIMEOUT,
                config.http.http1_header_read_timeout,
            ),
        ] {
            not_zero(var, d)?;
        }
        // Between proxies HTTP/1 travels as HTTP/2: whatever the HTTP/1 side accepts
        // must fit the HTTP/2 hop, or a request would pass one proxy and fail the next.
        let http = &config.http;
        let needed = http.http1_max_header_bytes + 32 * http.http1_max_headers;
        if (http.http2_max_header_list_bytes as usize) < needed {
            return Err(ConfigError {
                var: ENV_HTTP2_MAX_HEADER_LIST_BYTES,
                value: env
                    .get(ENV_HTTP2_MAX_HEADER_LIST_BYTES)
                    .unwrap_or_else(|| "16MiB".into()),
                expected: format!(
                    "at least {needed} bytes, to carry any HTTP/1 head the proxy accepts \
                     ({ENV_HTTP1_MAX_HEADER_BYTES} + 32 × {ENV_HTTP1_MAX_HEADERS})"
                ),
            });
        }
        Ok(config)
    }

    /// `MESH_PROXY_*` variables that are set but that this proxy does not know:
    /// most likely typos, worth a warning.
    pub fn unknown_vars(vars: impl Iterator<Item = String>) -> Vec<String> {
        vars.filter(|k| k.starts_with("MESH_PROXY_") && !KNOWN.contains(&k.as_str()))
            .collect()
    }
}

impl ListenConfig {
    /// Whether connections to `port` skip protocol detection.
    pub fn is_opaque(&self, port: u16) -> bool {
        self.opaque_ports.contains(&port)
    }
}

fn not_zero(var: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError {
            var,
            value: "0".into(),
            expected: "a duration greater than zero".into(),
        });
    }
    Ok(())
}

/// The discovery settings, if `MESH_PROXY_DESTINATION_ADDR` is set. The other
/// variables are checked either way: a typo is reported before discovery is turned on.
fn discovery(env: &impl Env) -> Result<Option<DiscoveryConfig>, ConfigError> {
    let dur = |var, default: &str| {
        let d = parse(
            env,
            var,
            default,
            "a duration like 500ms, 2s or 1m30s (Go's syntax: ns, us, ms, s, m, h)",
            |v| duration::parse(v).ok(),
        )?;
        not_zero(var, d).map(|()| d)
    };
    let context = parse(
        env,
        ENV_DESTINATION_CONTEXT,
        "",
        "empty or a JSON object like {\"ns\":\"default\"}",
        |v| {
            let ok = v.is_empty()
                || serde_json::from_str::<serde_json::Value>(v).is_ok_and(|j| j.is_object());
            ok.then(|| v.to_string())
        },
    )?;
    let timeout = dur(ENV_DISCOVERY_TIMEOUT, "1s")?;
    let idle_timeout = dur(ENV_DISCOVERY_IDLE_TIMEOUT, "60s")?;
    if env
        .get(ENV_DESTINATION_ADDR)
        .is_none_or(|v| v.trim().is_empty())
    {
        return Ok(None);
    }
    let addr = parse(
        env,
        ENV_DESTINATION_ADDR,
        "",
        "a host and port like mesh-destination.mesh-system.svc.cluster.local:8086",
        parse_host_port,
    )?;
    Ok(Some(DiscoveryConfig {
        addr,
        context,
        timeout,
        idle_timeout,
    }))
}

/// The policy settings, if `MESH_PROXY_POLICY_WORKLOAD` is set (which needs
/// discovery's address). The other variables are checked either way.
fn policy(env: &impl Env, discovery: bool) -> Result<Option<PolicyConfig>, ConfigError> {
    let default = parse(
        env,
        ENV_INBOUND_DEFAULT_POLICY,
        "all-unauthenticated",
        &format!(
            "one of {}",
            crate::policy::DefaultPolicy::ALL
                .map(|p| p.name())
                .join(", ")
        ),
        |v| v.parse::<crate::policy::DefaultPolicy>().ok(),
    )?;
    let cluster_networks = parse(
        env,
        ENV_POLICY_CLUSTER_NETWORKS,
        crate::policy::DEFAULT_CLUSTER_NETWORKS,
        "comma-separated CIDRs like 10.0.0.0/8,fd00::/8",
        |v| {
            v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| n.parse::<crate::policy::Cidr>().ok())
                .collect::<Option<Vec<_>>>()
        },
    )?;
    if default.name().starts_with("cluster-") && cluster_networks.is_empty() {
        return Err(ConfigError {
            var: ENV_POLICY_CLUSTER_NETWORKS,
            value: String::new(),
            expected: format!("at least one network, for the default policy {default}"),
        });
    }
    let ports = parse(
        env,
        ENV_INBOUND_PORTS,
        "",
        "comma-separated ports or ranges like 8080,9000-9010",
        parse_ports,
    )?;
    let timeout = parse(
        env,
        ENV_POLICY_TIMEOUT,
        "1s",
        "a duration like 500ms, 2s or 1m30s (Go's syntax: ns, us, ms, s, m, h)",
        |v| duration::parse(v).ok(),
    )?;
    not_zero(ENV_POLICY_TIMEOUT, timeout)?;
    if env
        .get(ENV_POLICY_WORKLOAD)
        .is_none_or(|v| v.trim().is_empty())
    {
        return Ok(None);
    }
    let workload = parse(
        env,
        ENV_POLICY_WORKLOAD,
        "",
        "a JSON object like {\"ns\":\"emojivoto\",\"pod\":\"web-5d7f9\"}",
        |v| {
            let j: serde_json::Value = serde_json::from_str(v).ok()?;
            let field = |k| j.get(k)?.as_str().filter(|s| !s.is_empty());
            (field("ns").is_some() && field("pod").is_some()).then(|| v.to_string())
        },
    )?;
    if !discovery {
        return Err(ConfigError {
            var: ENV_POLICY_WORKLOAD,
            value: workload,
            expected: format!(
                "{ENV_DESTINATION_ADDR} to be set too: the policy service is the destination service's"
            ),
        });
    }
    Ok(Some(PolicyConfig {
        workload,
        default,
        cluster_networks,
        ports,
        timeout,
    }))
}

/// The identity settings, if `MESH_PROXY_IDENTITY_ADDR` is set.
fn identity(env: &impl Env) -> Result<Option<IdentityConfig>, ConfigError> {
    if env
        .get(ENV_IDENTITY_ADDR)
        .is_none_or(|v| v.trim().is_empty())
    {
        return Ok(None);
    }
    let dur = |var, default: &str| {
        parse(
            env,
            var,
            default,
            "a duration greater than zero like 10s, 1m30s or 24h (Go's syntax)",
            |v| duration::parse_positive(v).ok(),
        )
    };
    let required = |var: &'static str| {
        env.get(var)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| ConfigError {
                var,
                value: String::new(),
                expected: format!("a value, since {ENV_IDENTITY_ADDR} is set"),
            })
    };
    let addr = parse(
        env,
        ENV_IDENTITY_ADDR,
        "",
        "a host and port like mesh-identity.mesh-system.svc.cluster.local:8080",
        parse_host_port,
    )?;
    required(ENV_IDENTITY_NAME)?;
    let name = parse(
        env,
        ENV_IDENTITY_NAME,
        "",
        "an identity like web.default.serviceaccount.identity.mesh.cluster.local",
        |v| names::is_identity(v).then(|| v.to_ascii_lowercase()),
    )?;
    // The control plane's names in the same trust domain unless given.
    let trust_domain = names::trust_domain_of(&name)
        .unwrap_or_default()
        .to_string();
    let service_name = |var, account: &str| {
        parse(
            env,
            var,
            &control_plane::service_identity(account, control_plane::NAMESPACE, &trust_domain),
            "an identity like mesh-identity.mesh-system.serviceaccount.identity.mesh.cluster.local",
            |v| names::is_identity(v).then(|| v.to_ascii_lowercase()),
        )
    };
    let server_name = service_name(
        ENV_IDENTITY_SVC_NAME,
        control_plane::IDENTITY_SERVICE_ACCOUNT,
    )?;
    let destination_name = service_name(
        ENV_DESTINATION_SVC_NAME,
        control_plane::DESTINATION_SERVICE_ACCOUNT,
    )?;
    let token_file = required(ENV_IDENTITY_TOKEN_FILE)?.trim().into();
    let anchors_pem = required(ENV_IDENTITY_TRUST_ANCHORS)?;
    let trust_anchors = parse_anchors(&anchors_pem).map_err(|why| ConfigError {
        var: ENV_IDENTITY_TRUST_ANCHORS,
        // The PEM itself is long and public; the reason is what helps.
        value: format!("{} bytes of PEM", anchors_pem.len()),
        expected: format!("PEM CERTIFICATE blocks usable as trust anchors ({why})"),
    })?;
    let min_refresh = dur(ENV_IDENTITY_MIN_REFRESH, "10s")?;
    let max_refresh = dur(ENV_IDENTITY_MAX_REFRESH, "24h")?;
    if min_refresh > max_refresh {
        return Err(ConfigError {
            var: ENV_IDENTITY_MAX_REFRESH,
            value: env.get(ENV_IDENTITY_MAX_REFRESH).unwrap_or_default(),
            expected: format!("a duration no shorter than {ENV_IDENTITY_MIN_REFRESH}"),
        });
    }
    Ok(Some(IdentityConfig {
        addr,
        name,
        server_name,
        destination_name,
        token_file,
        trust_anchors,
        min_refresh,
        max_refresh,
    }))
}

/// The tap server's settings, if identity is on. The variables are checked either
/// way: a typo is reported before identity is turned on.
fn tap(
    env: &impl Env,
    identity: Option<&IdentityConfig>,
) -> Result<Option<TapConfig>, ConfigError> {
    let listen_addr = parse(
        env,
        ENV_TAP_LISTEN_ADDR,
        "0.0.0.0:4190",
        "an address like 0.0.0.0:4190",
        |v| v.parse::<SocketAddr>().ok(),
    )?;
    let redact_headers = parse(
        env,
        ENV_TAP_REDACT_HEADERS,
        "",
        "comma-separated header names like x-api-key,x-session",
        parse_header_names,
    )?;
    let max_rps = parse(
        env,
        ENV_TAP_MAX_RPS,
        &DEFAULT_TAP_MAX_RPS.to_string(),
        "a number of requests per second from 1 to 10000",
        |v| v.parse::<u32>().ok().filter(|n| (1..=10_000).contains(n)),
    )?;
    let trust_domain = identity
        .and_then(|id| names::trust_domain_of(&id.name))
        .unwrap_or("cluster.local");
    let client_name = parse(
        env,
        ENV_TAP_SVC_NAME,
        &control_plane::service_identity(
            control_plane::TAP_SERVICE_ACCOUNT,
            control_plane::NAMESPACE,
            trust_domain,
        ),
        "an identity like mesh-tap.mesh-system.serviceaccount.identity.mesh.cluster.local",
        |v| names::is_identity(v).then(|| v.to_ascii_lowercase()),
    )?;
    if identity.is_none() {
        return Ok(None);
    }
    Ok(Some(TapConfig {
        listen_addr,
        client_name,
        redact_headers,
        max_rps,
    }))
}

/// Comma-separated header names; empty entries are skipped.
fn parse_header_names(s: &str) -> Option<Vec<http::HeaderName>> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}

/// Parses PEM trust anchors: at least one `CERTIFICATE`, each usable as an anchor.
fn parse_anchors(pem: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    let mut anchors = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| format!("bad PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!("unexpected PEM block {:?}", block.label));
        }
        let der = rustls_pki_types::CertificateDer::from(block.contents);
        webpki::anchor_from_trusted_cert(&der).map_err(|e| format!("bad certificate: {e}"))?;
        anchors.push(der);
    }
    if anchors.is_empty() {
        return Err("no CERTIFICATE found".into());
    }
    Ok(anchors)
}

fn parse<T>(
    env: &impl Env,
    var: &'static str,
    default: &str,
    expected: &str,
    f: impl FnOnce(&str) -> Option<T>,
) -> Result<T, ConfigError> {
    let value = env.get(var);
    let raw = value.as_deref().map(str::trim).unwrap_or(default);
    f(raw).ok_or_else(|| ConfigError {
        var,
        value: raw.to_string(),
        expected: expected.to_string(),
    })
}

/// `host:port` with a port, as the URI the gRPC client connects to. The host may be a
/// name (resolved when connecting), an IPv4 address or a bracketed IPv6 address.
fn parse_host_port(s: &str) -> Option<http::Uri> {
    let authority: http::uri::Authority = s.parse().ok()?;
    if authority.host().is_empty() || authority.port_u16().is_none_or(|p| p == 0) {
        return None;
    }
    // `user@host` would parse as an authority, but is not an address.
    if s.contains('@') {
        return None;
    }
    http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query("/")
        .build()
        .ok()
}

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1024,
        "MiB" | "M" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn parse_ports(s: &str) -> Option<BTreeSet<u16>> {
    let mut ports = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a == 0 || a > b {
                    return None;
                }
                ports.extend(a..=b);
            }
            None => {
                let p: u16 = part.parse().ok()?;
                if p == 0 {
                    return None;
                }
                ports.insert(p);
            }
        }
    }
    Some(ports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn defaults() {
        let c = Config::from_env(&env(&[])).expect("defaults are valid");
        assert_eq!(c.listen.outbound_addr, "127.0.0.1:4140".parse().unwrap());
        assert_eq!(c.listen.inbound_addr, "0.0.0.0:4143".parse().unwrap());
        assert_eq!(c.listen.admin_addr, "0.0.0.0:4191".parse().unwrap());
        assert_eq!(c.listen.detect_timeout, Duration::from_secs(1));
        assert!(c.listen.is_opaque(5432) && c.listen.is_opaque(25) && !c.listen.is_opaque(8080));
        assert_eq!(c.listen.inbound_forward_addr, None);
        assert_eq!(c.cores, 1);
        assert!(c.discovery.is_none());
        assert!(c.tap.is_none(), "no tap server without identity");
        // At least as generous as Linkerd's proxy (hyper 0.14's defaults).
        assert_eq!(c.http.http1_max_header_bytes, 8192 + 4096 * 100);
        assert_eq!(c.http.http1_max_headers, 100);
        assert_eq!(c.http.http2_max_header_list_bytes, 16 << 20);
        assert_eq!(c.parent_pid, None);
        assert_eq!(c.metrics_max_series, crate::metrics::DEFAULT_MAX_SERIES);
        let c = Config::from_env(&env(&[(ENV_DESTINATION_ADDR, "127.0.0.1:8086")])).unwrap();
        let d = c.discovery.expect("discovery on");
        assert_eq!(d.context, "");
        assert_eq!(d.timeout, Duration::from_secs(1));
        assert_eq!(d.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn header_limits() {
        let c = Config::from_env(&env(&[
            (ENV_HTTP1_MAX_HEADERS, "250"),
            (ENV_HTTP1_MAX_HEADER_BYTES, "1MiB"),
            (ENV_HTTP2_MAX_HEADER_LIST_BYTES, "2MiB"),
        ]))
        .unwrap();
        assert_eq!(
            (
                c.http.http1_max_headers,
                c.http.http1_max_header_bytes,
                c.http.http2_max_header_list_bytes
            ),
            (250, 1 << 20, 2 << 20)
        );
        // An HTTP/2 limit that could not carry an HTTP/1 head the proxy accepts.
        let err = Config::from_env(&env(&[
            (ENV_HTTP1_MAX_HEADER_BYTES, "1MiB"),
            (ENV_HTTP2_MAX_HEADER_LIST_BYTES, "1MiB"),
        ]))
        .expect_err("too small for the HTTP/1 limit");
        assert_eq!(err.var, ENV_HTTP2_MAX_HEADER_LIST_BYTES);
        assert!(err.to_string().contains("at least 1051776 bytes"), "{err}");
    }

    #[test]
    fn values_parse() {
        let c = Config::from_env(&env(&[
            (ENV_DETECT_TIMEOUT, "250ms"),
            (ENV_OPAQUE_PORTS, "8000, 9000-9002"),
            (ENV_INBOUND_FORWARD_ADDR, "127.0.0.1:8080"),
            (ENV_HTTP1_MAX_HEADER_BYTES, "16KiB"),
        ]))
        .unwrap();
        assert_eq!(c.listen.detect_timeout, Duration::from_millis(250));
        assert!(
            c.listen.is_opaque(8000)
                && c.listen.is_opaque(9001)
                && c.listen.is_opaque(3306)
                && !c.listen.is_opaque(9003)
        );
        assert_eq!(
            c.listen.inbound_forward_addr,
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(c.http.http1_max_header_bytes, 16 * 1024);

        let c = Config::from_env(&env(&[
            (
                ENV_DESTINATION_ADDR,
                "mesh-destination.mesh-system.svc.cluster.local:8086",
            ),
            (
                ENV_DESTINATION_CONTEXT,
                r#"{"ns":"emojivoto","pod":"web-0"}"#,
            ),
            (ENV_DISCOVERY_TIMEOUT, "250ms"),
            (ENV_DISCOVERY_IDLE_TIMEOUT, "5m"),
        ]))
        .unwrap();
        let d = c.discovery.unwrap();
        assert_eq!(
            d.addr.to_string(),
            "http://mesh-destination.mesh-system.svc.cluster.local:8086/"
        );
        assert_eq!(d.context, r#"{"ns":"emojivoto","pod":"web-0"}"#);
        assert_eq!(d.timeout, Duration::from_millis(250));
        assert_eq!(d.idle_timeout, Duration::from_secs(300));
        for addr in ["127.0.0.1:8086", "[::1]:8086"] {
            let c = Config::from_env(&env(&[(ENV_DESTINATION_ADDR, addr)])).unwrap();
            assert_eq!(c.discovery.unwrap().addr.authority().unwrap(), addr);
        }
    }

    #[test]
    fn errors_name_the_variable_and_expectation() {
        let cases = [
            (ENV_DETECT_TIMEOUT, "10"),
            (ENV_DETECT_TIMEOUT, "0s"),
            (ENV_CONNECT_TIMEOUT, "fast"),
            (ENV_OUTBOUND_LISTEN_ADDR, "localhost"),
            (ENV_OPAQUE_PORTS, "80,x"),
            (ENV_OPAQUE_PORTS, "90-80"),
            (ENV_OPAQUE_PORTS, "70000"),
            (ENV_CORES, "0"),
            (ENV_HTTP1_MAX_HEADER_BYTES, "1KiB"),
            (ENV_HTTP1_MAX_HEADER_BYTES, "32MiB"),
            (ENV_HTTP1_MAX_HEADERS, "0"),
            (ENV_HTTP1_MAX_HEADERS, "many"),
            (ENV_HTTP2_MAX_HEADER_LIST_BYTES, "1KiB"),
            (ENV_PARENT_PID, "me"),
            (ENV_PARENT_PID, "1"),
            (ENV_METRICS_MAX_SERIES, "0"),
            (ENV_METRICS_MAX_SERIES, "many"),
            (ENV_INBOUND_METRICS_AUTHORITY_LABELS, "yes"),
            (ENV_DESTINATION_ADDR, "controller"),
            (ENV_DESTINATION_ADDR, "controller:0"),
            (ENV_DESTINATION_ADDR, "http://controller:8086"),
            (ENV_DESTINATION_ADDR, "user@controller:8086"),
            (ENV_DESTINATION_CONTEXT, "ns:default"),
            (ENV_DESTINATION_CONTEXT, "[1]"),
            (ENV_DISCOVERY_TIMEOUT, "0s"),
            (ENV_DISCOVERY_IDLE_TIMEOUT, "60"),
            (ENV_TAP_LISTEN_ADDR, "4190"),
            (ENV_TAP_SVC_NAME, "mesh-tap.mesh-system.svc.cluster.local"),
            (ENV_TAP_REDACT_HEADERS, "x-api-key,bad header"),
            (ENV_TAP_MAX_RPS, "0"),
            (ENV_TAP_MAX_RPS, "fast"),
            (ENV_INBOUND_DEFAULT_POLICY, "allow"),
            (ENV_POLICY_CLUSTER_NETWORKS, "10.0.0.1/8"),
            (ENV_POLICY_CLUSTER_NETWORKS, "10.0.0.0/33"),
            (ENV_INBOUND_PORTS, "0"),
            (ENV_POLICY_TIMEOUT, "0s"),
            // Without the destination service's address, or not the workload's JSON.
            (ENV_POLICY_WORKLOAD, r#"{"ns":"default","pod":"web-0"}"#),
        ];
        for (var, value) in cases {
            let err = Config::from_env(&env(&[(var, value)])).expect_err(value);
            assert_eq!(err.var, var);
            let msg = err.to_string();
            assert!(msg.starts_with(var) && msg.contains("expected"), "{msg}");
        }
    }

    #[test]
    fn policy() {
        let dst = (ENV_DESTINATION_ADDR, "mesh-destination.mesh-system:8086");
        // Off without a workload: today's behaviour.
        assert!(Config::from_env(&env(&[dst])).unwrap().policy.is_none());
        let workload = (ENV_POLICY_WORKLOAD, r#"{"ns":"default","pod":"web-0"}"#);
        let p = Config::from_env(&env(&[dst, workload]))
            .unwrap()
            .policy
            .unwrap();
        assert_eq!(p.default.name(), "all-unauthenticated");
        assert_eq!(p.cluster_networks.len(), 5);
        assert!(p.ports.is_empty());
        assert_eq!(p.timeout, Duration::from_secs(1));
        assert!(p.default_policy().is_ok());
        let p = Config::from_env(&env(&[
            dst,
            workload,
            (ENV_INBOUND_DEFAULT_POLICY, "cluster-authenticated"),
            (ENV_POLICY_CLUSTER_NETWORKS, "198.18.0.0/15, fd00::/8"),
            (ENV_INBOUND_PORTS, "8080,9000-9001"),
        ]))
        .unwrap()
        .policy
        .unwrap();
        assert_eq!(p.default.name(), "cluster-authenticated");
        assert_eq!(p.cluster_networks.len(), 2);
        assert_eq!(p.ports, BTreeSet::from([8080, 9000, 9001]));
        for bad in [r#"{"ns":"default"}"#, r#"{"ns":"","pod":"x"}"#, "web-0"] {
            let err = Config::from_env(&env(&[dst, (ENV_POLICY_WORKLOAD, bad)])).unwrap_err();
            assert_eq!(err.var, ENV_POLICY_WORKLOAD, "{bad}");
        }
        // `cluster-*` needs cluster networks.
        let err = Config::from_env(&env(&[
            dst,
            workload,
            (ENV_INBOUND_DEFAULT_POLICY, "cluster-unauthenticated"),
            (ENV_POLICY_CLUSTER_NETWORKS, ""),
        ]))
        .unwrap_err();
        assert_eq!(err.var, ENV_POLICY_CLUSTER_NETWORKS);
    }

    /// A self-signed CA certificate, as PEM, made by the one CA implementation (the
    /// controller's; a dev-dependency only).
    fn anchor_pem() -> String {
        let day = Duration::from_secs(24 * 3600);
        mesh_controller::identity::generate_anchor_and_issuer("cluster.local", day).0
    }

    const NAME: &str = "web.default.serviceaccount.identity.mesh.cluster.local";

    fn identity_env(anchors: &str) -> HashMap<String, String> {
        [
            (ENV_IDENTITY_ADDR, "127.0.0.1:8080"),
            (ENV_IDENTITY_NAME, NAME),
            (
                ENV_IDENTITY_TOKEN_FILE,
                "/var/run/secrets/tokens/mesh-identity",
            ),
            (ENV_IDENTITY_TRUST_ANCHORS, anchors),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn identity() {
        assert!(Config::from_env(&env(&[])).unwrap().identity.is_none());
        let pem = anchor_pem();
        let c = Config::from_env(&identity_env(&pem)).unwrap();
        let id = c.identity.unwrap();
        assert_eq!(id.addr.to_string(), "http://127.0.0.1:8080/");
        assert_eq!(id.name, NAME);
        assert_eq!(
            id.server_name,
            "mesh-identity.mesh-system.serviceaccount.identity.mesh.cluster.local"
        );
        assert_eq!(
            id.destination_name,
            "mesh-destination.mesh-system.serviceaccount.identity.mesh.cluster.local"
        );
        assert_eq!(id.trust_anchors.len(), 1);
        assert_eq!(id.min_refresh, Duration::from_secs(10));
        assert_eq!(id.max_refresh, Duration::from_secs(24 * 3600));
        let mut e = identity_env(&format!("{pem}{pem}"));
        e.insert(ENV_IDENTITY_MIN_REFRESH.into(), "1s".into());
        e.insert(ENV_IDENTITY_MAX_REFRESH.into(), "1m".into());
        e.insert(
            ENV_IDENTITY_SVC_NAME.into(),
            "CA.Ops.serviceaccount.identity.mesh.cluster.local".into(),
        );
        let id = Config::from_env(&e).unwrap().identity.unwrap();
        assert_eq!(
            id.server_name,
            "ca.ops.serviceaccount.identity.mesh.cluster.local"
        );
        assert_eq!(id.trust_anchors.len(), 2);
        assert_eq!(
            (id.min_refresh, id.max_refresh),
            (Duration::from_secs(1), Duration::from_secs(60))
        );

        let cases = [
            (ENV_IDENTITY_ADDR, "identity"),
            (ENV_IDENTITY_NAME, ""),
            (ENV_IDENTITY_NAME, "web.default.svc.cluster.local"),
            (
                ENV_IDENTITY_NAME,
                "web..serviceaccount.identity.mesh.cluster.local",
            ),
            (
                ENV_IDENTITY_SVC_NAME,
                "mesh-identity.mesh-system.svc.cluster.local",
            ),
            (ENV_IDENTITY_TOKEN_FILE, " "),
            (ENV_IDENTITY_TRUST_ANCHORS, ""),
            (ENV_IDENTITY_TRUST_ANCHORS, "not pem"),
            (
                ENV_IDENTITY_TRUST_ANCHORS,
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            (
                ENV_IDENTITY_TRUST_ANCHORS,
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            (ENV_IDENTITY_MIN_REFRESH, "0s"),
            (ENV_IDENTITY_MAX_REFRESH, "5s"),
        ];
        for (var, value) in cases {
            let mut e = identity_env(&pem);
            e.insert(var.to_string(), value.to_string());
            let err = Config::from_env(&e).expect_err(value);
            assert_eq!(err.var, var, "{value:?}: {err}");
            let msg = err.to_string();
            assert!(msg.starts_with(var) && msg.contains("expected"), "{msg}");
        }
    }

    #[test]
    fn tap() {
        let pem = anchor_pem();
        let t = Config::from_env(&identity_env(&pem)).unwrap().tap.unwrap();
        assert_eq!(t.listen_addr, "0.0.0.0:4190".parse().unwrap());
        assert_eq!(
            t.client_name,
            "mesh-tap.mesh-system.serviceaccount.identity.mesh.cluster.local"
        );
        assert!(t.redact_headers.is_empty());
        assert_eq!(t.max_rps, 100);
        let mut e = identity_env(&pem);
        for (k, v) in [
            (ENV_TAP_LISTEN_ADDR, "127.0.0.1:14190"),
            (
                ENV_TAP_SVC_NAME,
                "Tap.Ops.serviceaccount.identity.mesh.cluster.local",
            ),
            (ENV_TAP_REDACT_HEADERS, " X-Api-Key, ,x-session "),
            (ENV_TAP_MAX_RPS, "20"),
        ] {
            e.insert(k.into(), v.into());
        }
        let t = Config::from_env(&e).unwrap().tap.unwrap();
        assert_eq!(t.listen_addr, "127.0.0.1:14190".parse().unwrap());
        assert_eq!(
            t.client_name,
            "tap.ops.serviceaccount.identity.mesh.cluster.local"
        );
        assert_eq!(t.redact_headers, ["x-api-key", "x-session"]);
        assert_eq!(t.max_rps, 20);
    }

    #[test]
    fn durations() {
        // Every duration variable reads Go's syntax (`mesh_api::duration`).
        let detect = |v: &'static str| {
            Config::from_env(&env(&[(ENV_DETECT_TIMEOUT, v)]))
                .map(|c| c.listen.detect_timeout)
                .ok()
        };
        assert_eq!(detect("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(detect("2m"), Some(Duration::from_secs(120)));
        assert_eq!(detect("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(detect("ms"), None);
        assert_eq!(detect("5d"), None);
        assert_eq!(detect(""), None);
    }

    #[test]
    fn unknown_vars_are_reported() {
        let vars = ["MESH_PROXY_LOG", "MESH_PROXY_DETECT_TIMOUT", "PATH"].map(String::from);
        assert_eq!(
            Config::unknown_vars(vars.into_iter()),
            vec!["MESH_PROXY_DETECT_TIMOUT".to_string()]
        );
    }
}
