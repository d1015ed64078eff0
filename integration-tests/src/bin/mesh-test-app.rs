//! `mesh-test-app`: the backend that process- and pod-level tests put behind the mesh.
//!
//! Every answer is deterministic, so a test can run the same client once directly and
//! once through the proxies and compare the two outputs byte for byte. One HTTP port
//! speaks HTTP/1.1 and HTTP/2 prior knowledge (h2c), as a real pod's server might, and
//! the TCP listeners cover the two shapes a TCP proxy gets wrong most often: half-close
//! (client finishes first) and server-speaks-first (the server writes before the client).
//!
//! ```text
//! mesh-test-app --name web --http 0.0.0.0:8080 --tcp-echo 0.0.0.0:9000 --tcp-banner 0.0.0.0:9100
//! ```
//!
//! Once a listener is bound it prints `listening <kind> <addr>` on stdout; tests wait on
//! those lines instead of sleeping. With `--log-connections`, each TCP connection a
//! `tcp-*` listener accepts is a line `accepted <kind> <addr> from <peer>`, so a test can
//! tell whether anything reached the application at all.

// Stdout is this binary's interface to the harness (the `listening` lines).
#![allow(clippy::print_stdout)]

use std::{
    convert::Infallible,
    io::Write as _,
    net::SocketAddr,
    pin::Pin,
    process::ExitCode,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{header::HeaderValue, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

/// What a banner port writes as soon as a connection is accepted.
const BANNER: &[u8] = b"220 mesh-test-app ready\r\n";

/// `/bytes/{n}` is sent in chunks of this size, so large bodies really stream.
const CHUNK: usize = 16 * 1024;

type ResBody = BoxBody<Bytes, hyper::Error>;

struct Args {
    name: String,
    http: Vec<SocketAddr>,
    tcp_echo: Vec<SocketAddr>,
    tcp_banner: Vec<SocketAddr>,
    log_connections: bool,
}

const USAGE: &str = "usage: mesh-test-app [--name NAME] [--http ADDR]... [--tcp-echo ADDR]... [--tcp-banner ADDR]... [--log-connections]";

impl Args {
    fn parse(mut raw: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut args = Args {
            name: "app".to_string(),
            http: Vec::new(),
            tcp_echo: Vec::new(),
            tcp_banner: Vec::new(),
            log_connections: false,
        };
        while let Some(flag) = raw.next() {
            let mut value = || {
                raw.next()
                    .with_context(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match flag.as_str() {
                "--name" => args.name = value()?,
                "--http" => args.http.push(parse_addr(&value()?)?),
                "--tcp-echo" => args.tcp_echo.push(parse_addr(&value()?)?),
                "--tcp-banner" => args.tcp_banner.push(parse_addr(&value()?)?),
                "--log-connections" => args.log_connections = true,
                "-h" | "--help" => bail!("{USAGE}"),
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        if args.http.is_empty() && args.tcp_echo.is_empty() && args.tcp_banner.is_empty() {
            bail!("nothing to listen on\n{USAGE}");
        }
        Ok(args)
    }
}

fn parse_addr(s: &str) -> anyhow::Result<SocketAddr> {
    s.parse()
        .with_context(|| format!("invalid socket address {s:?}"))
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("mesh-test-app: {e:#}");
            return ExitCode::from(64);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh-test-app: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-test-app: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    // Bind everything before announcing anything, so a harness that saw the last line
    // knows every port is ready.
    for addr in &args.http {
        let listener = bind(*addr).await?;
        announce("http", &listener)?;
        let name = args.name.clone();
        tasks.spawn(serve_http(listener, name));
    }
    for addr in &args.tcp_echo {
        let listener = bind(*addr).await?;
        announce("tcp-echo", &listener)?;
        tasks.spawn(serve_tcp(listener, "tcp-echo", None, args.log_connections));
    }
    for addr in &args.tcp_banner {
        let listener = bind(*addr).await?;
        announce("tcp-banner", &listener)?;
        tasks.spawn(serve_tcp(
            listener,
            "tcp-banner",
            Some(BANNER),
            args.log_connections,
        ));
    }
    tokio::select! {
        res = tokio::signal::ctrl_c() => res.context("waiting for ctrl-c")?,
        Some(res) = tasks.join_next() => res.context("listener task failed")??,
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))
}

fn announce(kind: &str, listener: &TcpListener) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("local address")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {kind} {addr}").context("writing to stdout")?;
    out.flush().context("flushing stdout")
}

// === HTTP ===

async fn serve_http(listener: TcpListener, name: String) -> anyhow::Result<()> {
    let name: &'static str = Box::leak(name.into_boxed_str());
    loop {
        let (stream, _) = listener.accept().await.context("accept")?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, name));
            // The auto builder sniffs the connection preface, so one port serves both
            // HTTP/1.1 and h2c prior knowledge.
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                eprintln!("mesh-test-app: http connection: {e}");
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    name: &'static str,
) -> Result<Response<ResBody>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    let res = match (&method, segments.as_slice()) {
        (&Method::GET, ["status", code]) => match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => text(status, format!("status {}\n", status.as_u16())),
            None => text(
                StatusCode::BAD_REQUEST,
                format!("invalid status {code:?}\n"),
            ),
        },
        (&Method::POST | &Method::PUT, ["echo"]) => echo(req),
        (&Method::GET, ["bytes", n]) => match n.parse::<u64>() {
            Ok(n) => Response::new(DeterministicBytes { sent: 0, len: n }.boxed()),
            Err(_) => text(StatusCode::BAD_REQUEST, format!("invalid length {n:?}\n")),
        },
        (&Method::GET, ["delay", ms]) => match ms.parse::<u64>() {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                text(StatusCode::OK, format!("delayed {ms}\n"))
            }
            Err(_) => text(StatusCode::BAD_REQUEST, format!("invalid delay {ms:?}\n")),
        },
        (&Method::GET, ["headers"]) => text(StatusCode::OK, describe_request(&req)),
        (&Method::GET, ["trailers"]) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-test-trailer", HeaderValue::from_static("yes"));
            let frames = [
                Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"ok\n"))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames));
            let mut res = Response::new(body.boxed());
            res.headers_mut().insert(
                http::header::TRAILER,
                HeaderValue::from_static("x-test-trailer"),
            );
            res
        }
        (&Method::GET, _) => text(StatusCode::OK, format!("hello from {name}\n")),
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed on {path}\n"),
        ),
    };
    Ok(res)
}

fn text(status: StatusCode, body: String) -> Response<ResBody> {
    let mut res = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Sends the request body back frame by frame as it arrives, trailers included, without
/// ever holding the whole body: a proxy that buffers, reorders or drops trailers shows.
fn echo(req: Request<Incoming>) -> Response<ResBody> {
    let content_type = req.headers().get(http::header::CONTENT_TYPE).cloned();
    let mut res = Response::new(req.into_body().boxed());
    if let Some(ct) = content_type {
        res.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    res
}

/// Method, URI, version and every header, sorted one per line, so a test sees exactly
/// what the proxies delivered.
fn describe_request(req: &Request<Incoming>) -> String {
    let mut lines: Vec<String> = req
        .headers()
        .iter()
        .map(|(k, v)| format!("{}: {}", k, String::from_utf8_lossy(v.as_bytes())))
        .collect();
    lines.sort();
    let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `len` bytes where byte `i` is `i % 251`, produced in 16 KiB frames with an exact size
/// hint (so HTTP/1 gets a content-length).
struct DeterministicBytes {
    sent: u64,
    len: u64,
}

impl Body for DeterministicBytes {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let remaining = self.len - self.sent;
        if remaining == 0 {
            return Poll::Ready(None);
        }
        let n = remaining.min(CHUNK as u64);
        let start = self.sent;
        let chunk: Vec<u8> = (start..start + n).map(|i| (i % 251) as u8).collect();
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}

// === TCP ===

async fn serve_tcp(
    listener: TcpListener,
    kind: &'static str,
    banner: Option<&'static [u8]>,
    log: bool,
) -> anyhow::Result<()> {
    let local = listener.local_addr().context("local address")?;
    loop {
        let (stream, peer) = listener.accept().await.context("accept")?;
        if log {
            let mut out = std::io::stdout().lock();
            writeln!(out, "accepted {kind} {local} from {peer}").context("writing to stdout")?;
            out.flush().context("flushing stdout")?;
        }
        tokio::spawn(async move {
            if let Err(e) = echo_tcp(stream, banner).await {
                eprintln!("mesh-test-app: tcp connection: {e}");
            }
        });
    }
}

/// Echoes until the client half-closes, then finishes writing and half-closes too, so
/// the client reads every byte before its EOF.
async fn echo_tcp(mut stream: TcpStream, banner: Option<&[u8]>) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    if let Some(banner) = banner {
        stream.write_all(banner).await?;
    }
    let (read, mut write) = stream.split();
    tokio::io::copy_buf(&mut BufReader::new(read), &mut write).await?;
    write.shutdown().await
}
