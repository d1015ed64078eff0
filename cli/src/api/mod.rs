//! The controller's APIs, as every command that reads them reaches them: its HTTP API
//! (metrics, diagnostics, version; port 8084) and its tap API (gRPC; port 8088).
//!
//! Where they are is decided once, in [`Api::locate`], in this order:
//!
//! 1. `--api-addr` (and `--tap-addr`, else the same host on 8088): directly;
//! 2. `--context` or `--kubeconfig` given: the cluster they name, through a
//!    port-forward to the controller's pod ([`forward`]);
//! 3. a running `mesh demo` (found by its `demo.json`): the demo's controller;
//! 4. a kubeconfig there without flags (`$KUBECONFIG`, `~/.kube/config`) or the
//!    in-cluster service account: that cluster, through a port-forward;
//! 5. else an error naming each of these.
//!
//! So a demo on this machine wins over a cluster the kubeconfig merely happens to name,
//! and asking for a cluster by flag always gets it. Every command that talks to the
//! controller takes [`ApiArgs`] and goes through [`Api`], so where the APIs are, how
//! long they get, which credentials go with a call and what their errors look like are
//! decided here once; in a cluster the clients talk to the port-forward's local
//! addresses, unchanged.

mod forward;
pub(crate) mod kubeconfig;

pub(crate) use self::forward::unready;
use self::{forward::Forward, kubeconfig::KubeArgs};
use crate::demo::state::State;
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use mesh_api::{
    control_plane,
    tap::{tap_api_client::TapApiClient, TapByResourceRequest, TapEvent},
};
use std::{net::SocketAddr, time::Duration};
use tokio::net::TcpStream;

/// How long the controller gets to answer one request (through a port-forward, the
/// WebSocket's set-up included).
const TIMEOUT: Duration = Duration::from_secs(5);

/// How long the tap API gets to start a stream (it opens every pod's first).
const TAP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the controller is: the flags every command that talks to it shares.
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct ApiArgs {
    /// The controller's HTTP API (`HOST:PORT`) [default: through a port-forward with
    /// --context/--kubeconfig, else the running demo's, else through a port-forward in
    /// the kubeconfig's cluster].
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) api_addr: Option<SocketAddr>,

    /// The controller's tap API (`HOST:PORT`) [default: found with the HTTP API; with
    /// --api-addr, its host on port 8088].
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) tap_addr: Option<SocketAddr>,

    #[command(flatten)]
    pub(crate) kube: KubeArgs,
}

/// Where the controller's APIs are, and the demo they belong to, if they were found that
/// way.
#[derive(Debug)]
pub(crate) struct Api {
    pub(crate) addr: SocketAddr,
    /// The tap API; `None` when the running demo does not say (an older demo's state).
    pub(crate) tap: Option<SocketAddr>,
    /// Where the tap call's credentials come from.
    credentials: Credentials,
    /// The running demo, when the APIs were found through it.
    pub(crate) demo: Option<State>,
    /// The namespace commands mean when they name none.
    namespace: String,
    /// In a cluster: the port-forwards `addr` and `tap` lead through, open while the
    /// `Api` lives.
    forwards: Vec<Forward>,
}

/// The bearer token a tap call carries, which the controller reviews in cluster mode.
enum Credentials {
    /// The demo's controller reviews nothing.
    None,
    /// `--api-addr`: the kubeconfig's user, if there is a kubeconfig (read only when a
    /// tap call needs it, so that no exec plugin runs for `mesh stat`).
    Flags(KubeArgs),
    /// The cluster's config the port-forward was opened with.
    Cluster(Box<kube::Config>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the config: it holds the user's secrets.
        f.write_str(match self {
            Self::None => "None",
            Self::Flags(_) => "Flags",
            Self::Cluster(_) => "Cluster",
        })
    }
}

// === impl Api ===

impl Api {
    /// The APIs, found in the order the module's documentation gives; an error says
    /// everything that was tried.
    pub(crate) async fn locate(args: &ApiArgs) -> anyhow::Result<Self> {
        if let Some(addr) = args.api_addr {
            let tap = args
                .tap_addr
                .unwrap_or_else(|| SocketAddr::new(addr.ip(), control_plane::TAP_PORT));
            return Ok(Self {
                addr,
                tap: Some(tap),
                credentials: Credentials::Flags(args.kube.clone()),
                demo: None,
                namespace: "default".into(),
                forwards: Vec::new(),
            });
        }
        if args.kube.given() {
            return Self::cluster(args).await;
        }
        if let Some(demo) = State::find()? {
            return Ok(Self {
                addr: demo.api,
                tap: args.tap_addr.or(demo.tap),
                credentials: Credentials::None,
                namespace: demo.namespace.clone(),
                demo: Some(demo),
                forwards: Vec::new(),
            });
        }
        if kubeconfig::available() {
            return Self::cluster(args).await;
        }
        anyhow::bail!(
            "no controller to talk to: no --api-addr, --context or --kubeconfig given, no \
             running mesh demo found (looked for {}), and no kubeconfig ($KUBECONFIG, \
             ~/.kube/config) or in-cluster service account; start a demo with `mesh demo`, \
             or pass --kubeconfig PATH or --api-addr HOST:PORT",
            State::looked_for()
        )
    }

    /// The controller in the flags' cluster: its running and ready pod, a port-forward
    /// to its HTTP API and one to its tap API (unless `--tap-addr` says where).
    pub(crate) async fn cluster(args: &ApiArgs) -> anyhow::Result<Self> {
        let (client, cluster) = args.kube.client().await?;
        let pod = forward::controller_pod(&client, &cluster.described).await?;
        let api = Forward::open(client.clone(), &pod, control_plane::API_PORT).await?;
        let mut forwards = vec![];
        let addr = api.local;
        forwards.push(api);
        let tap = match args.tap_addr {
            Some(tap) => tap,
            None => {
                let tap = Forward::open(client, &pod, control_plane::TAP_PORT).await?;
                let addr = tap.local;
                forwards.push(tap);
                addr
            }
        };
        Ok(Self {
            addr,
            tap: Some(tap),
            namespace: cluster.config.default_namespace.clone(),
            credentials: Credentials::Cluster(Box::new(cluster.config)),
            demo: None,
            forwards,
        })
    }

    /// Whether the APIs are reached through port-forwards, which close with the `Api`.
    pub(crate) fn forwarded(&self) -> bool {
        !self.forwards.is_empty()
    }

    /// The `authorization` value of a tap call, or why there is none (said only if the
    /// controller then refuses for want of one).
    pub(crate) async fn authorization(&self) -> Result<Option<http::HeaderValue>, String> {
        match &self.credentials {
            Credentials::None => Ok(None),
            Credentials::Cluster(config) => kubeconfig::bearer(config).await,
            Credentials::Flags(flags) => match flags.resolve().await {
                Ok(cluster) => kubeconfig::bearer(&cluster.config).await,
                // No kubeconfig at all: a controller that needs a token says so.
                Err(_) if !flags.given() => Ok(None),
                Err(e) => Err(format!("{e:#}")),
            },
        }
    }

    /// How a failed call to `addr` is explained: through which port-forward, and what
    /// the kubelet or API server said, if it said something.
    fn via(&self, addr: SocketAddr) -> String {
        match self.forwards.iter().find(|f| f.local == addr) {
            None => format!("at {addr}"),
            Some(f) => match f.error() {
                None => format!("through the port-forward to {}", f.target),
                Some(e) => format!("through the port-forward to {} ({e})", f.target),
            },
        }
    }

    /// Opens a tap stream: the tap API's answer to `request`, event by event.
    pub(crate) async fn tap(
        &self,
        request: TapByResourceRequest,
    ) -> anyhow::Result<tonic::Streaming<TapEvent>> {
        let addr = self.tap.context(
            "the running demo does not say where its tap API is (started by an older mesh); give --tap-addr",
        )?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .context("the tap API's address")?
            .connect_timeout(TAP_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the tap API {}", self.via(addr)))?;
        let mut req = tonic::Request::new(request);
        let (authorization, no_token) = match self.authorization().await {
            Ok(value) => (value, None),
            Err(why) => (None, Some(why)),
        };
        if let Some(value) = authorization {
            let value = tonic::metadata::MetadataValue::try_from(value.as_bytes())
                .context("the kubeconfig's token is not valid in a header")?;
            req.metadata_mut().insert("authorization", value);
        }
        let mut client = TapApiClient::new(channel);
        let events = tokio::time::timeout(TAP_TIMEOUT, client.tap_by_resource(req))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the tap API {} did not answer in {TAP_TIMEOUT:?}",
                    self.via(addr)
                )
            })?
            .map_err(|status| match (status.code(), &no_token) {
                (tonic::Code::Unauthenticated, Some(why)) => anyhow::anyhow!(
                    "tap refused: {} ({:?}); no token was sent: {why}",
                    status.message(),
                    status.code()
                ),
                (tonic::Code::Unavailable | tonic::Code::Unknown, _)
                    if !self.forwards.is_empty() =>
                {
                    anyhow::anyhow!(
                        "tap failed {}: {} ({:?})",
                        self.via(addr),
                        status.message(),
                        status.code()
                    )
                }
                _ => anyhow::anyhow!("tap refused: {} ({:?})", status.message(), status.code()),
            })?
            .into_inner();
        Ok(events)
    }

    /// The namespace a command means when it names none: the demo's against the demo,
    /// the kubeconfig context's in a cluster, else `default` (Linkerd's, from a
    /// kubeconfig with none set).
    pub(crate) fn default_namespace(&self) -> &str {
        &self.namespace
    }

    /// The namespace a `-n` flag gives, else [`Api::default_namespace`].
    pub(crate) fn namespace_or_default(&self, flag: Option<&str>) -> String {
        flag.unwrap_or(&self.namespace).to_string()
    }

    /// `GET path?query` (the query built from `params`, in order), as JSON. A 4xx or
    /// 5xx is an error carrying the API's own `error` message.
    pub(crate) async fn get_json(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.request(path, params).await?;
        let doc: serde_json::Value = serde_json::from_slice(&body).with_context(|| {
            format!(
                "the controller's API {} answered {status} with something not JSON",
                self.via(self.addr)
            )
        })?;
        if !status.is_success() {
            anyhow::bail!("the controller refused {path} ({status}): {}", reason(&doc));
        }
        Ok(doc)
    }

    /// `GET path?query` as text (e.g. Prometheus metrics). A 4xx or 5xx is an error
    /// carrying the API's own `error` message, which comes as JSON.
    pub(crate) async fn get_text(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let (status, body) = self.request(path, params).await?;
        if !status.is_success() {
            let reason = serde_json::from_slice(&body)
                .map(|doc: serde_json::Value| reason(&doc).to_string())
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
            anyhow::bail!("the controller refused {path} ({status}): {reason}");
        }
        String::from_utf8(body.to_vec())
            .map_err(|_| anyhow::anyhow!("the controller's answer to {path} is not UTF-8 text"))
    }

    /// The one request both readers make: `GET path?query`, its status and whole body,
    /// within [`TIMEOUT`]; an error says where the API was sought.
    async fn request(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let target = if params.is_empty() {
            path.to_string()
        } else {
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish();
            format!("{path}?{query}")
        };
        let addr = self.addr;
        tokio::time::timeout(TIMEOUT, get(addr, &target))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the controller's API {} did not answer in {TIMEOUT:?}",
                    self.via(addr)
                )
            })?
            .with_context(|| format!("cannot reach the controller's API {}", self.via(addr)))
    }
}

/// `GET path` on `port` of the controller's pod in `kube`'s cluster, through a
/// port-forward of its own, as text: what `mesh check` reads of the admin port's
/// `/metrics`, which no other command needs. An error says which step failed.
pub(crate) async fn get_from_controller_pod(
    kube: &KubeArgs,
    port: u16,
    path: &str,
) -> anyhow::Result<String> {
    let (client, cluster) = kube.client().await?;
    let pod = forward::controller_pod(&client, &cluster.described).await?;
    let fwd = Forward::open(client, &pod, port).await?;
    let answer = tokio::time::timeout(TIMEOUT, get(fwd.local, path))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{path} through the port-forward to {} did not answer in {TIMEOUT:?}",
                fwd.target
            )
        })?;
    let (status, body) = answer.map_err(|e| match fwd.error() {
        Some(why) => anyhow::anyhow!(
            "cannot GET {path} through the port-forward to {} ({why})",
            fwd.target
        ),
        None => anyhow::anyhow!(
            "cannot GET {path} through the port-forward to {}: {e}",
            fwd.target
        ),
    })?;
    if !status.is_success() {
        anyhow::bail!("{path} on {} answered {status}", fwd.target);
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| anyhow::anyhow!("{path} on {} is not UTF-8 text", fwd.target))
}

/// The API's own reason in an error answer (`{"error": "..."}`).
fn reason(doc: &serde_json::Value) -> &str {
    doc["error"].as_str().unwrap_or("no reason given")
}

/// `GET target` on `addr` over a fresh HTTP/1 connection: the status and whole body.
async fn get(addr: SocketAddr, target: &str) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    // The connection task ends with the response; its error is the request's error.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(target)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let rsp = send.send_request(req).await?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The parts of the metrics API's answers the tables show; `-o json` prints the answers
/// whole, as the controller gave them (their shape is the API's, documented on the
/// controller's `api` module).
pub(crate) mod answer {
    use serde::Deserialize;

    /// One resource: a row, or one end of an edge.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub(crate) struct Resource {
        #[serde(rename = "type")]
        pub(crate) kind: String,
        #[serde(default)]
        pub(crate) namespace: Option<String>,
        pub(crate) name: String,
    }

    #[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
    pub(crate) struct Latency {
        pub(crate) p50: Option<f64>,
        pub(crate) p95: Option<f64>,
        pub(crate) p99: Option<f64>,
    }

    #[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
    pub(crate) struct Tcp {
        pub(crate) open_connections: u64,
        pub(crate) opened: u64,
        pub(crate) read_bytes_per_second: f64,
        pub(crate) write_bytes_per_second: f64,
    }

    #[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
    pub(crate) struct Pods {
        pub(crate) meshed: u64,
        pub(crate) total: u64,
    }

    /// `/api/stat`.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub(crate) struct Stat {
        pub(crate) rows: Vec<StatRow>,
    }

    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub(crate) struct StatRow {
        pub(crate) resource: Resource,
        /// `None` for services and authorities, which are not made of pods.
        #[serde(default)]
        pub(crate) pods: Option<Pods>,
        pub(crate) success_rate: Option<f64>,
        pub(crate) rps: f64,
        pub(crate) latency_ms: Latency,
        pub(crate) tcp: Tcp,
        /// Requests and connections the inbound policy refused, a second (absent from
        /// a controller older than authorization policy).
        #[serde(default)]
        pub(crate) unauthorized_rps: f64,
    }

    /// `/api/edges`.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub(crate) struct Edges {
        pub(crate) edges: Vec<Edge>,
    }

    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub(crate) struct Edge {
        pub(crate) src: Resource,
        pub(crate) dst: Resource,
        pub(crate) client_id: Option<String>,
        pub(crate) server_id: Option<String>,
        pub(crate) secured: bool,
        /// What the destination's inbound policy refused a second (absent from a
        /// controller older than authorization policy).
        #[serde(default)]
        pub(crate) unauthorized_rps: f64,
    }

    /// `/api/routes`.
    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub(crate) struct Routes {
        pub(crate) routes: Vec<Route>,
    }

    #[derive(Clone, Debug, Deserialize, PartialEq)]
    pub(crate) struct Route {
        /// `None`: the profile's default route.
        pub(crate) route: Option<String>,
        /// The requests as the application saw them (after retries).
        pub(crate) success_rate: Option<f64>,
        pub(crate) rps: f64,
        pub(crate) latency_ms: Latency,
        /// The attempts the proxies sent, when they reported them.
        #[serde(default)]
        pub(crate) actual: Option<Attempts>,
    }

    #[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
    pub(crate) struct Attempts {
        pub(crate) success_rate: Option<f64>,
        pub(crate) rps: f64,
    }

    /// Reads an answer of the API into the shape a table needs.
    pub(crate) fn read<T: serde::de::DeserializeOwned>(
        doc: &serde_json::Value,
        what: &str,
    ) -> anyhow::Result<T> {
        T::deserialize(doc).map_err(|e| {
            anyhow::anyhow!("the controller's {what} answer is not what this mesh reads: {e}")
        })
    }
}
