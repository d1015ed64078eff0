//! The controller's APIs, as every command that reads them reaches them: its HTTP API
//! (metrics, diagnostics, version; port 8084) and its tap API (gRPC; port 8088), at
//! `--api-addr` / `--tap-addr`, or else the running demo's (found by its `demo.json`).
//!
//! Every command that talks to the controller takes [`ApiArgs`] and goes through
//! [`Api`], so where the APIs are, how long they get, which credentials go with a call
//! and what their errors look like are decided here once.

use crate::demo::state::State;
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use mesh_api::tap::{tap_api_client::TapApiClient, TapByResourceRequest, TapEvent};
use std::{net::SocketAddr, path::PathBuf, time::Duration};
use tokio::net::TcpStream;

/// How long the controller gets to answer one request.
const TIMEOUT: Duration = Duration::from_secs(5);

/// How long the tap API gets to start a stream (it opens every pod's first).
const TAP_TIMEOUT: Duration = Duration::from_secs(15);

/// The tap API's port (DESIGN.md's 8088): where it is when only `--api-addr` is given.
const TAP_PORT: u16 = 8088;

/// Where the controller is: the flags every command that talks to it shares.
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct ApiArgs {
    /// The controller's HTTP API (`HOST:PORT`) [default: the running demo's].
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) api_addr: Option<SocketAddr>,

    /// The controller's tap API (`HOST:PORT`) [default: the running demo's, else
    /// --api-addr's host on port 8088].
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) tap_addr: Option<SocketAddr>,

    /// The kubeconfig context to use [default: the kubeconfig's current context].
    #[arg(long, value_name = "NAME")]
    pub(crate) context: Option<String>,

    /// The kubeconfig file [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub(crate) kubeconfig: Option<PathBuf>,
}

/// Where the controller's APIs are, and the demo they belong to, if they were found that
/// way.
#[derive(Debug)]
pub(crate) struct Api {
    pub(crate) addr: SocketAddr,
    /// The tap API; `None` when the running demo does not say (an older demo's state).
    pub(crate) tap: Option<SocketAddr>,
    /// The bearer token that goes with tap calls (the kubeconfig's), which the
    /// controller reviews in cluster mode.
    token: Option<String>,
    /// The running demo, when the APIs were found through it.
    pub(crate) demo: Option<State>,
}

// === impl Api ===

impl Api {
    /// The APIs the flags name, or else the running demo's; an error says how to give
    /// them.
    pub(crate) async fn locate(args: &ApiArgs) -> anyhow::Result<Self> {
        if let Some(addr) = args.api_addr {
            let tap = args
                .tap_addr
                .unwrap_or_else(|| SocketAddr::new(addr.ip(), TAP_PORT));
            return Ok(Self {
                addr,
                tap: Some(tap),
                token: kubeconfig_token().await,
                demo: None,
            });
        }
        let demo = State::require("no --api-addr given and ", " or pass --api-addr")?;
        Ok(Self {
            addr: demo.api,
            tap: args.tap_addr.or(demo.tap),
            token: None,
            demo: Some(demo),
        })
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
            .with_context(|| format!("cannot reach the tap API at {addr}"))?;
        let mut req = tonic::Request::new(request);
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .context("the kubeconfig's token is not valid in a header")?;
            req.metadata_mut().insert("authorization", value);
        }
        let mut client = TapApiClient::new(channel);
        let events = tokio::time::timeout(TAP_TIMEOUT, client.tap_by_resource(req))
            .await
            .map_err(|_| {
                anyhow::anyhow!("the tap API at {addr} did not answer in {TAP_TIMEOUT:?}")
            })?
            .map_err(|status| {
                anyhow::anyhow!("tap refused: {} ({:?})", status.message(), status.code())
            })?
            .into_inner();
        Ok(events)
    }

    /// The namespace a command means when it names none: the demo's against the demo,
    /// else `default` (Linkerd's, from a kubeconfig with none set).
    pub(crate) fn default_namespace(&self) -> &str {
        self.demo
            .as_ref()
            .map_or("default", |d| d.namespace.as_str())
    }

    /// `GET path?query` (the query built from `params`, in order), as JSON. A 4xx or
    /// 5xx is an error carrying the API's own `error` message.
    pub(crate) async fn get_json(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<serde_json::Value> {
        let target = if params.is_empty() {
            path.to_string()
        } else {
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish();
            format!("{path}?{query}")
        };
        let addr = self.addr;
        let (status, body) = tokio::time::timeout(TIMEOUT, get(addr, &target))
            .await
            .map_err(|_| {
                anyhow::anyhow!("the controller's API at {addr} did not answer in {TIMEOUT:?}")
            })?
            .with_context(|| format!("cannot reach the controller's API at {addr}"))?;
        let doc: serde_json::Value = serde_json::from_slice(&body).with_context(|| {
            format!("the controller's API at {addr} answered {status} with something not JSON")
        })?;
        if !status.is_success() {
            let message = doc["error"].as_str().unwrap_or("no reason given");
            anyhow::bail!("the controller refused {path} ({status}): {message}");
        }
        Ok(doc)
    }
}

/// The kubeconfig's bearer token, if it has one: what the controller reviews in
/// cluster mode. Without one the call goes without, and a controller that needs it
/// says so.
async fn kubeconfig_token() -> Option<String> {
    use secrecy::ExposeSecret as _;
    let config = kube::Config::infer().await.ok()?;
    if let Some(token) = &config.auth_info.token {
        return Some(token.expose_secret().to_string());
    }
    let file = config.auth_info.token_file.as_ref()?;
    let token = std::fs::read_to_string(file).ok()?;
    Some(token.trim().to_string())
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
