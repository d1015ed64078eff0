//! `mesh version`: the CLI's version and the control plane's, as `linkerd version`
//! shows them.
//!
//! The control plane's version comes from the controller's API (`GET /api/version`):
//! at `--api-addr`, or else the running demo's. A control plane that cannot be reached
//! is reported as such, not as an error: the CLI's version is still worth printing.

use crate::demo::state::State;
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use std::{net::SocketAddr, time::Duration};
use tokio::net::TcpStream;

/// How long the control plane gets to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of `mesh version`.
#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Only the CLI's version.
    #[arg(long)]
    client: bool,

    /// Print the versions alone, without labels.
    #[arg(long)]
    short: bool,

    /// The controller's API (`HOST:PORT`) [default: the running demo's].
    #[arg(long, value_name = "HOST:PORT")]
    api_addr: Option<SocketAddr>,
}

/// Prints the versions.
pub async fn run(args: VersionArgs) -> anyhow::Result<()> {
    let client = env!("CARGO_PKG_VERSION");
    let mut out = match args.short {
        true => format!("{client}\n"),
        false => format!("Client version: {client}\n"),
    };
    if !args.client {
        let server = match server_version(args.api_addr).await {
            Ok(v) => v,
            Err(e) => format!("unavailable ({e:#})"),
        };
        match args.short {
            true => out.push_str(&format!("{server}\n")),
            false => out.push_str(&format!("Server version: {server}\n")),
        }
    }
    crate::out(&out);
    Ok(())
}

/// The controller's version, from its API.
async fn server_version(api: Option<SocketAddr>) -> anyhow::Result<String> {
    let api = match api {
        Some(a) => a,
        None => {
            State::find()?
                .context("no running mesh demo found, and no --api-addr given")?
                .api
        }
    };
    let body = tokio::time::timeout(TIMEOUT, get(api, "/api/version"))
        .await
        .map_err(|_| anyhow::anyhow!("the controller at {api} did not answer in {TIMEOUT:?}"))?
        .with_context(|| format!("ask the controller at {api}"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&body).context("the controller's answer is not JSON")?;
    doc["version"]
        .as_str()
        .map(str::to_string)
        .context("the controller's answer names no version")
}

/// `GET path` on `addr` over a fresh HTTP/1 connection: the body of a 2xx answer.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Bytes> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let rsp = send.send_request(req).await?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!("HTTP {status}");
    }
    Ok(body)
}
