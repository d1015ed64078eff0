//! Endpoints pieces of the proxy's in-process tests: a proxy on loopback ports, a
//! backend that speaks HTTP/1 and HTTP/2, a TCP echo server, and raw-socket helpers.
#![allow(dead_code, unreachable_pub)]

pub mod control_plane;
pub mod controller;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_proxy::config::Config;
use std::{collections::HashMap, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub struct TestProxy {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    /// The tap server's address, when it runs (identity on).
    pub tap: Option<SocketAddr>,
    pub proxy: Arc<mesh_proxy::Proxy>,
    pub done: tokio::task::JoinHandle<()>,
}

/// Starts a proxy on ephemeral loopback ports with extra `MESH_PROXY_*` settings.
pub async fn proxy(extra: &[(&str, String)]) -> TestProxy {
    let mut env: HashMap<String, String> = [
        ("MESH_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("MESH_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("MESH_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
        // Its default, 0.0.0.0:4190, would be one port for every proxy of a test.
        ("MESH_PROXY_TAP_LISTEN_ADDR", "127.0.0.1:0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.clone());
    }
    let config = Config::from_env(&env).expect("test config is valid");
    let bound = mesh_proxy::bind(config).await.expect("bind");
    let (inbound, outbound, admin) = bound.addrs();
    let tap = bound.tap_addr();
    let proxy = bound.proxy();
    let done = tokio::spawn(bound.serve());
    TestProxy {
        inbound,
        outbound,
        admin,
        tap,
        proxy,
        done,
    }
}

impl TestProxy {
    pub fn metrics(&self) -> String {
        self.proxy.metrics.encode()
    }

    /// Waits until `/metrics` contains `needle` (responses are counted when their
    /// stream ends, which may be just after the client has read them).
    pub async fn wait_metric(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.metrics();
            if m.contains(needle) {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "metric {needle:?} never appeared in:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

/// A backend serving HTTP/1.1 and h2c on one port:
/// `/status/N`, `/delay/MS`, `/echo` (streams the body back, trailers too), `/drain`
/// (reads the whole body, then answers `200 read N bytes`),
/// `/grpc/N` (a gRPC response with `grpc-status: N` in trailers), `/partial`
/// (promises 1000 bytes, sends 10, then closes), `/upgrade` (101, then echoes bytes),
/// and anything else `200 hello`.
pub async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(handle);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let rsp = match (parts.next().unwrap_or(""), parts.next()) {
        ("status", Some(n)) => {
            let mut r = Response::new(full(format!("status {n}\n")));
            *r.status_mut() = StatusCode::from_u16(n.parse().unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r
        }
        ("delay", Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            Response::new(full("delayed\n"))
        }
        ("drain", _) => {
            // A handler that reads the whole request before it answers, as most do.
            match req.into_body().collect().await {
                Ok(b) => Response::new(full(format!("read {} bytes\n", b.to_bytes().len()))),
                Err(_) => {
                    let mut r = Response::new(full("body failed\n"));
                    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    r
                }
            }
        }
        ("echo", _) => {
            // HTTP/1 sends only the trailer fields a `Trailer` header declares.
            let declared = req.headers().get("trailer").cloned();
            let mut r = Response::new(req.into_body().boxed());
            if let Some(t) = declared {
                r.headers_mut().insert("trailer", t);
            }
            r
        }
        ("grpc", Some(code)) => {
            let trailers = {
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", code.parse().unwrap());
                t
            };
            let frames = vec![
                Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames));
            let mut r = Response::new(BodyExt::boxed(body));
            r.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            r
        }
        ("upgrade", _) => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            r.headers_mut().insert("upgrade", "echo".parse().unwrap());
            r
        }
        _ => Response::new(full("hello\n")),
    };
    Ok(rsp)
}

/// A backend that counts its requests and answers each, after `delay`, with
/// `200` and its name; [`Counted::stop`] closes its listener and every connection.
pub struct Counted {
    pub addr: SocketAddr,
    pub name: &'static str,
    hits: Arc<std::sync::atomic::AtomicUsize>,
    tasks: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
}

impl Counted {
    pub async fn start(name: &'static str, delay: Duration) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name, delay).await
    }

    pub async fn start_on(addr: SocketAddr, name: &'static str, delay: Duration) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks = Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let (h, t) = (hits.clone(), tasks.clone());
        tasks.lock().unwrap().spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let h = h.clone();
                t.lock().unwrap().spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(Response::new(full(name)))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            name,
            hits,
            tasks,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops listening and drops every connection.
    pub fn stop(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An address where connections are refused, reserved for as long as the returned
/// socket lives (bound, not listening), so that no other test can take the port.
pub fn refusing() -> (SocketAddr, socket2::Socket) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    (addr, sock)
}

/// Waits until `f` holds, polling, or fails the test after 15s.
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Binds a loopback port and runs `handle` on each connection it accepts.
async fn serve_tcp<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(handle(s));
        }
    });
    addr
}

/// A backend that reads a request head and answers with a response that promises
/// 1000 bytes but sends 10 before closing.
pub async fn truncating_backend() -> SocketAddr {
    serve_tcp(|mut s| async move {
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
            .await;
    })
    .await
}

/// An HTTP/1 backend that reads a request head and answers `200` with `fields` extra
/// header fields of `value_len` bytes each, then closes.
pub async fn wide_headers_backend(fields: usize, value_len: usize) -> SocketAddr {
    serve_tcp(move |mut s| async move {
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        let mut rsp = String::from("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n");
        for i in 0..fields {
            rsp.push_str(&format!("x-field-{i}: {}\r\n", "v".repeat(value_len)));
        }
        rsp.push_str("\r\nok\n");
        let _ = s.write_all(rsp.as_bytes()).await;
    })
    .await
}

/// TCP echo; with `banner`, the server speaks first.
pub async fn tcp_echo(banner: Option<&'static [u8]>) -> SocketAddr {
    serve_tcp(move |mut s| async move {
        if let Some(b) = banner {
            if s.write_all(b).await.is_err() {
                return;
            }
        }
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Writes `req` on a fresh connection and reads until the peer closes or `until`
/// appears in what was read.
pub async fn raw(addr: SocketAddr, req: &[u8], until: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    read_until(&mut s, until).await
}

pub async fn read_until(s: &mut TcpStream, until: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("peer neither answered nor closed")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if !until.is_empty() && String::from_utf8_lossy(&out).contains(until) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP/1 client connection through `addr`.
pub async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Body> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// An HTTP/2 prior-knowledge client connection through `addr`.
pub async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(full("")).unwrap()
}

pub fn body(s: &'static str) -> Body {
    full(s)
}

/// Asserts that a request through `via` still gets its `200`: whatever the test did
/// before did not disturb the proxy.
pub async fn assert_still_serves(via: SocketAddr, backend: SocketAddr, http2: bool) {
    let req = get(&format!("http://{backend}/status/200"));
    let rsp = if http2 {
        h2(via).await.send_request(req).await
    } else {
        h1(via).await.send_request(req).await
    };
    assert_eq!(
        rsp.expect("the proxy still answers").status(),
        StatusCode::OK
    );
}
