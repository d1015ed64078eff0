//! `mesh-bench backend`: the server under load. It does as little as a server can so
//! that the numbers are about the path to it: every request on every listener gets
//! `200` with the same 1 KiB body, over HTTP/1.1 keep-alive or h2c (prior knowledge).
//! `--echo` listeners echo raw TCP, for the opaque-connection benchmarks.

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_bench::net::{accept, current_thread_runtime, terminated};
use std::{convert::Infallible, net::SocketAddr};
use tokio::net::TcpListener;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to serve on (repeatable).
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
    /// Address of a TCP echo listener, for the opaque-TCP connection benchmarks
    /// (repeatable).
    #[arg(long)]
    echo: Vec<SocketAddr>,
    /// Runtime worker threads (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Size of every response body.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    let rt = if args.threads <= 1 {
        current_thread_runtime()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
            .context("building the runtime")?
    };
    rt.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let body = Bytes::from(vec![b'x'; args.body_bytes]);
    for addr in &args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        eprintln!("mesh-bench backend: listening on {addr}");
        tokio::spawn(serve_http(listener, body.clone()));
    }
    for addr in &args.echo {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        eprintln!("mesh-bench backend: echoing on {addr}");
        tokio::spawn(crate::tcp::echo(listener));
    }
    terminated().await;
    Ok(())
}

async fn serve_http(listener: TcpListener, body: Bytes) {
    loop {
        let stream = accept(&listener, "mesh-bench backend").await;
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req| {
                let mut rsp = Response::new(Full::new(body.clone()));
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                async move { Ok::<_, Infallible>(rsp) }
            });
            // Errors here are clients going away (the load generator closing at the end).
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
