//! The controller's HTTP API, as every command that reads it reaches it: at
//! `--api-addr`, or else the running demo's (found by its `demo.json`).
//!
//! `mesh version`, `mesh stat`, `mesh edges` and `mesh routes` all go through [`Api`],
//! so where the API is, how long it gets and what its errors look like are decided here
//! once.

use crate::demo::state::State;
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use std::{net::SocketAddr, time::Duration};
use tokio::net::TcpStream;

/// How long the controller gets to answer one request.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the controller's API is, and the demo it belongs to, if it was found that way.
#[derive(Debug)]
pub(crate) struct Api {
    pub(crate) addr: SocketAddr,
    /// The running demo, when no `--api-addr` was given.
    pub(crate) demo: Option<State>,
}

// === impl Api ===

impl Api {
    /// The API at `addr`, or else the running demo's; an error says how to give one.
    pub(crate) fn locate(addr: Option<SocketAddr>) -> anyhow::Result<Self> {
        match addr {
            Some(addr) => Ok(Self { addr, demo: None }),
            None => {
                let demo = State::require("no --api-addr given and ", " or pass --api-addr")?;
                Ok(Self {
                    addr: demo.api,
                    demo: Some(demo),
                })
            }
        }
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
        pub(crate) success_rate: Option<f64>,
        pub(crate) rps: f64,
        pub(crate) latency_ms: Latency,
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
