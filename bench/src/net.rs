//! The benchmarks' plumbing: accepting connections on a backend, HTTP/1 client
//! connections and responses, runtimes, and the end of a run by signal.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// The next connection on `listener`, with Nagle off. A failed accept (out of file
/// descriptors, say) is reported on stderr after `who: ` and retried 50 ms later.
pub async fn accept(listener: &TcpListener, who: &str) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                eprintln!("{who}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A TCP connection to `addr` (`host:port`), with Nagle off.
pub async fn tcp(addr: &str) -> Result<TokioIo<TcpStream>, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    Ok(TokioIo::new(s))
}

/// The sending half of an HTTP/1 client connection for bodiless requests.
pub type H1Tx = http1::SendRequest<Empty<Bytes>>;

/// An HTTP/1 connection to `addr`; the connection runs on a task of its own.
pub async fn connect_h1(addr: &str) -> Result<H1Tx, String> {
    let (tx, conn) = http1::handshake(tcp(addr).await?)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

/// Reads a response to its end: its body, or what went wrong (a non-2xx status with its
/// body).
pub async fn read_response(
    rsp: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<Bytes, String> {
    let rsp = rsp.map_err(|e| format!("request: {e}"))?;
    let status = rsp.status();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    Ok(body)
}

/// A runtime on this thread alone: what shares the machine with the measured processes
/// takes as little of it as it can.
pub fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("building the runtime: {e}"))
}

/// Returns once the process gets SIGTERM or SIGINT (Ctrl-C); SIGINT only, should the
/// SIGTERM handler fail to install.
pub async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
