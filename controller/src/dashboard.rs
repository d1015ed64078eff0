//! The dashboard's server, on the API's port (8084): the front end (`web/`, embedded
//! at build time by `build.rs`), the security every answer of the port carries, and
//! the Host allowlist in front of it all.
//!
//! - `GET /` is `index.html`, `GET /<path>` any other file under `web/` (its README
//!   aside), each with its content hash as `ETag` (`If-None-Match` answers 304) and
//!   `Cache-Control: no-cache` (a browser revalidates, and a new controller's assets
//!   are never mixed with an old page). `HEAD` works; another method is a 405 with
//!   `Allow`. The front end routes in the URL's fragment (`#/ns/demo`), which no
//!   server sees, so an unknown path is a 404, not `index.html`. Not compressed: the
//!   whole front end is far under the 300 KB a first load may transfer, and no
//!   compressor is among the controller's dependencies.
//! - Every answer, the API's too, carries a strict Content-Security-Policy ([`CSP`]:
//!   nothing but the controller's own scripts, styles and connections), `nosniff`,
//!   `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`.
//! - Against DNS rebinding (a page of another site whose name is made to resolve to
//!   127.0.0.1, reading the port-forward), every request's `Host` must be `localhost`,
//!   an IP address, or a name given with `--dashboard-allowed-host`, with any port;
//!   else a 403 says which Host was refused and how to allow it. A request with no
//!   `Host` (no browser sends one) is answered.
//! - Every endpoint is read-only: no GET changes anything (the API answers GET and
//!   HEAD only), and the live streams ([`crate::api`]'s `/api/stream/...`) read what
//!   the other endpoints read.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

/// One embedded file of `web/`.
#[derive(Debug)]
pub struct Asset {
    /// Its URL path: `/index.html`, `/app/main.js`.
    pub path: &'static str,
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// A quoted hash of its bytes.
    pub etag: &'static str,
}

/// Every file of `web/` but its README, as `build.rs` found them.
pub static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The policy every answer carries: the page runs its own scripts and styles only,
/// talks to its own origin only, and cannot be framed, nor post a form anywhere.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The names the dashboard answers besides `localhost` and IP addresses
/// (`--dashboard-allowed-host`), lower case, without a trailing dot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts(Arc<[String]>);

impl AllowedHosts {
    /// The names, each a DNS name without a port (`dashboard.example.com`); an error
    /// says which is not.
    pub fn new(names: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut allowed = Vec::new();
        for name in names {
            let lower = name.trim_end_matches('.').to_ascii_lowercase();
            if !mesh_api::names::is_dns_domain(&lower) {
                return Err(format!(
                    "invalid --dashboard-allowed-host {name:?}: expected a DNS name such as \
                     dashboard.example.com, without a scheme or port"
                ));
            }
            allowed.push(lower);
        }
        Ok(Self(allowed.into()))
    }

    /// Whether a request with this `Host` value is answered.
    pub fn allows(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        if name.starts_with('[') {
            // host_name checked it is an IPv6 literal.
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost" || name.parse::<Ipv4Addr>().is_ok() || self.0.contains(&name)
    }

    /// The refusal of a request whose `Host` is not allowed; `None` if it is.
    pub fn check<B>(&self, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
        let host = match req.headers().get(header::HOST) {
            Some(value) => value.to_str().unwrap_or("(not ASCII)").to_string(),
            // An absolute URI's authority stands for the Host.
            None => req.uri().authority()?.to_string(),
        };
        if self.allows(&host) {
            return None;
        }
        let message = format!(
            "Host {host:?} is not allowed: the dashboard and its API answer localhost, IP \
             addresses and the names given with --dashboard-allowed-host \
             (MESH_DASHBOARD_ALLOWED_HOSTS), against DNS rebinding; to reach it by this \
             name, start the controller with --dashboard-allowed-host {}",
            host_name(&host).unwrap_or("NAME").trim_end_matches('.'),
        );
        Some(plain(StatusCode::FORBIDDEN, message))
    }
}

/// A Host value's name, without its port: `[::1]` for an IPv6 literal (checked), or
/// `None` if the value is no `host[:port]`.
fn host_name(host: &str) -> Option<&str> {
    let port_ok = |port: &str| port.is_empty() || port.parse::<u16>().is_ok();
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => "",
            after => after.strip_prefix(':')?,
        };
        return port_ok(port).then(|| &host[..ip.len() + 2]);
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port_ok(port) => name,
        Some(_) => return None,
        None => host,
    };
    (!name.is_empty() && !name.contains(':')).then_some(name)
}

/// Answers a request for a file of the front end out of `assets`.
pub fn asset<B>(req: &Request<B>, assets: &[Asset]) -> Response<Full<Bytes>> {
    let path = match req.uri().path() {
        "/" => "/index.html",
        path => path,
    };
    let Some(asset) = assets.iter().find(|a| a.path == path) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no such page: {path} (the dashboard's pages are under /#/)"),
        );
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut rsp = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} {path}: the dashboard's files are read with GET",
                req.method()
            ),
        );
        rsp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return rsp;
    }
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == asset.etag || tag == "*");
    let mut rsp = match fresh {
        true => {
            let mut rsp = Response::new(Full::new(Bytes::new()));
            *rsp.status_mut() = StatusCode::NOT_MODIFIED;
            rsp
        }
        false => {
            let mut rsp = Response::new(Full::new(Bytes::from_static(asset.body)));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            );
            rsp
        }
    };
    let headers = rsp.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    rsp
}

/// Adds the security headers every answer of the port carries.
pub fn secure(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn plain(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(message + "\n")));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{self, Sources, Streams},
        index::Index,
        scrape::Store,
    };
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::rt::TokioIo;
    use std::{net::SocketAddr, time::Duration};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::sync::CancellationToken;

    static TEST_ASSETS: &[Asset] = &[
        Asset {
            path: "/index.html",
            body: b"<!doctype html><title>mesh</title>",
            content_type: "text/html; charset=utf-8",
            etag: "\"00000000000000aa\"",
        },
        Asset {
            path: "/app/main.js",
            body: b"console.log('mesh');",
            content_type: "text/javascript; charset=utf-8",
            etag: "\"00000000000000bb\"",
        },
    ];

    fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap()
    }

    async fn body_of(rsp: Response<Full<Bytes>>) -> Bytes {
        rsp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn assets_are_served_with_etags_and_revalidated() {
        let rsp = asset(&request(Method::GET, "/", &[]), TEST_ASSETS);
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(
            rsp.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(rsp.headers()[header::ETAG], "\"00000000000000aa\"");
        assert_eq!(rsp.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(&body_of(rsp).await[..], TEST_ASSETS[0].body);

        let rsp = asset(&request(Method::HEAD, "/app/main.js", &[]), TEST_ASSETS);
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(
            rsp.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );

        // The browser's copy is current: 304, no body, the same ETag.
        for tag in ["\"00000000000000bb\"", "\"x\", W/\"00000000000000bb\"", "*"] {
            let req = request(Method::GET, "/app/main.js", &[("if-none-match", tag)]);
            let rsp = asset(&req, TEST_ASSETS);
            assert_eq!(rsp.status(), StatusCode::NOT_MODIFIED, "{tag}");
            assert_eq!(rsp.headers()[header::ETAG], "\"00000000000000bb\"");
            assert!(body_of(rsp).await.is_empty());
        }
        // An old copy gets the new one.
        let req = request(Method::GET, "/app/main.js", &[("if-none-match", "\"old\"")]);
        assert_eq!(asset(&req, TEST_ASSETS).status(), StatusCode::OK);

        // Files are read, never written.
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let rsp = asset(&request(method.clone(), "/index.html", &[]), TEST_ASSETS);
            assert_eq!(rsp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(rsp.headers()[header::ALLOW], "GET, HEAD");
        }
        // Routes live in the fragment: a path the front end does not have is a 404.
        let rsp = asset(&request(Method::GET, "/ns/demo", &[]), TEST_ASSETS);
        assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
        let text = body_of(rsp).await;
        assert!(String::from_utf8_lossy(&text).contains("/ns/demo"));
    }

    /// The build script's table: every file of `web/` but the README, each with the
    /// hash of its bytes.
    #[test]
    fn the_embedded_table_is_web() {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
        assert!(ASSETS.iter().all(|a| a.path != "/README.md"));
        if web.join("index.html").is_file() {
            let index = ASSETS.iter().find(|a| a.path == "/index.html");
            let index = index.expect("web/index.html is embedded");
            assert_eq!(index.content_type, "text/html; charset=utf-8");
        }
        for a in ASSETS {
            let on_disk = std::fs::read(web.join(&a.path[1..])).unwrap();
            assert_eq!(a.body, &on_disk[..], "{}", a.path);
            assert_eq!(a.etag.len(), 18, "{}", a.etag);
            // The same bytes, the same tag; another file, another.
            assert!(ASSETS
                .iter()
                .all(|b| (a.body == b.body) == (a.etag == b.etag)));
        }
    }

    #[test]
    fn hosts_are_localhost_ip_literals_or_named() {
        let hosts = AllowedHosts::new(["Dash.Example.com".to_string()]).unwrap();
        for allowed in [
            "localhost",
            "localhost:8084",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.0.0.1:38211",
            "10.1.2.3:8084",
            "[::1]",
            "[::1]:8084",
            "[fe80::1]:80",
            "dash.example.com",
            "dash.example.com.:443",
            "DASH.example.COM:8084",
        ] {
            assert!(hosts.allows(allowed), "{allowed}");
        }
        for refused in [
            "evil.example",
            "evil.example:8084",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "example.com",
            "sub.dash.example.com",
            "[::1",
            "[not-ip]:80",
            "::1",
            "127.0.0.1:99999",
            "localhost:port",
            "",
            ":8084",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
        assert!(!AllowedHosts::default().allows("dash.example.com"));
        for bad in [
            "http://dash.example.com",
            "dash.example.com:8084",
            "",
            "a b",
        ] {
            let e = AllowedHosts::new([bad.to_string()]).unwrap_err();
            assert!(e.contains("--dashboard-allowed-host"), "{e}");
        }
    }

    /// The API's port, served on loopback as the controller serves it.
    async fn server(allowed: &[&str]) -> (SocketAddr, Sources, CancellationToken) {
        let index = Index::new("cluster.local", "cluster.local");
        let shutdown = CancellationToken::new();
        let sources = Sources {
            store: std::sync::Arc::new(Store::new(mesh_core::stats::Limits::default())),
            index: index.clone(),
            scrape_timeout: Duration::from_secs(1),
            tap: crate::tap::TapService::new(
                index,
                Err("no identity in this test".to_string()),
                None,
                shutdown.clone(),
            ),
            allowed_hosts: AllowedHosts::new(allowed.iter().map(|s| s.to_string())).unwrap(),
            streams: Streams::default(),
            health: Default::default(),
            policy: crate::policy::PolicyIndex::new(Default::default()),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(api::serve(listener, sources.clone(), shutdown.clone()));
        (addr, sources, shutdown)
    }

    /// A request through hyper's client on its own connection; the answer's head and
    /// its body, still streaming, with the connection's task.
    async fn send(
        addr: SocketAddr,
        method: Method,
        path: &str,
        host: &str,
    ) -> (Response<hyper::body::Incoming>, tokio::task::JoinHandle<()>) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        (sender.send_request(req).await.unwrap(), conn)
    }

    async fn text(rsp: Response<hyper::body::Incoming>) -> String {
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    fn assert_secure(rsp: &Response<hyper::body::Incoming>, what: &str) {
        let h = rsp.headers();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP, "{what}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{what}");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{what}");
    }

    #[tokio::test]
    async fn the_port_refuses_rebound_hosts_and_secures_every_answer() {
        let (addr, _, shutdown) = server(&["dash.example.com"]).await;
        let own = addr.to_string();
        let with_port = format!("localhost:{}", addr.port());
        let v6 = format!("[::1]:{}", addr.port());
        for path in ["/", "/api/stat?resource=deploy", "/api/version"] {
            for host in [
                own.as_str(),
                with_port.as_str(),
                v6.as_str(),
                "dash.example.com:8084",
            ] {
                let (rsp, _) = send(addr, Method::GET, path, host).await;
                assert_secure(&rsp, path);
                assert_ne!(rsp.status(), StatusCode::FORBIDDEN, "{path} {host}");
                if path.starts_with("/api/") {
                    assert_eq!(rsp.status(), StatusCode::OK, "{path} {host}");
                }
            }
            // A page of evil.example whose name now resolves to 127.0.0.1.
            let (rsp, _) = send(addr, Method::GET, path, "evil.example:8084").await;
            assert_eq!(rsp.status(), StatusCode::FORBIDDEN, "{path}");
            assert_secure(&rsp, path);
            let why = text(rsp).await;
            assert!(why.contains("\"evil.example:8084\""), "{why}");
            assert!(
                why.contains("--dashboard-allowed-host evil.example"),
                "{why}"
            );
        }
        // `/` is index.html when the front end is built in, else a 404; both secured.
        let (rsp, _) = send(addr, Method::GET, "/", &own).await;
        match ASSETS.iter().find(|a| a.path == "/index.html") {
            Some(index) => {
                assert_eq!(rsp.status(), StatusCode::OK);
                let etag = rsp.headers()[header::ETAG].clone();
                assert_eq!(etag, index.etag);
                assert_eq!(text(rsp).await.as_bytes(), index.body);
            }
            None => assert_eq!(rsp.status(), StatusCode::NOT_FOUND),
        }
        shutdown.cancel();
    }

    /// No GET changes anything, and nothing but GET (and HEAD) is answered: every
    /// endpoint refuses the methods that would.
    #[tokio::test]
    async fn nothing_but_get_is_answered() {
        let (addr, _, shutdown) = server(&[]).await;
        let host = addr.to_string();
        for path in [
            "/api/version",
            "/api/stat?resource=deploy",
            "/api/top?resource=deploy",
            "/api/stream/stat?resource=deploy",
            "/api/stream/tap?resource=deploy",
        ] {
            for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
                let (rsp, _) = send(addr, method.clone(), path, &host).await;
                assert_eq!(
                    rsp.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
                assert!(rsp.headers()[header::ALLOW]
                    .to_str()
                    .unwrap()
                    .contains("GET"));
            }
        }
        let (rsp, _) = send(addr, Method::GET, "/api/stream/nope", &host).await;
        assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
        // HEAD: GET's head, no body.
        let (rsp, _) = send(addr, Method::HEAD, "/api/version", &host).await;
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_secure(&rsp, "HEAD");
        let length = rsp.headers()[header::CONTENT_LENGTH].to_str().unwrap();
        assert!(length.parse::<usize>().unwrap() > 0, "{length}");
        assert!(text(rsp).await.is_empty());
        shutdown.cancel();
    }

    /// Reads the body until `count` events named `name` came; each with when it came.
    async fn events(
        body: &mut hyper::body::Incoming,
        name: &str,
        count: usize,
        seen: &mut String,
    ) -> Vec<(tokio::time::Instant, serde_json::Value)> {
        let mut found = Vec::new();
        while found.len() < count {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("an event within 10 s")
                .expect("the stream goes on")
                .unwrap();
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen.push_str(std::str::from_utf8(&data).unwrap());
            while let Some((event, rest)) = seen.split_once("\n\n") {
                let event = event.to_string();
                *seen = rest.to_string();
                if let Some(data) = event
                    .strip_prefix(&format!("event: {name}\ndata: "))
                    .map(str::to_string)
                {
                    found.push((
                        tokio::time::Instant::now(),
                        serde_json::from_str(&data).unwrap(),
                    ));
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn the_stat_stream_sends_every_interval_and_ends_with_its_client() {
        let (addr, sources, shutdown) = server(&[]).await;
        let path = "/api/stream/stat?resource=deploy&namespace=demo&interval=1s";
        let (rsp, conn) = send(addr, Method::GET, path, &addr.to_string()).await;
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()[header::CONTENT_TYPE], "text/event-stream");
        assert_secure(&rsp, path);
        let mut body = rsp.into_body();
        let mut seen = String::new();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"retry: 2000\n\n");
        let got = events(&mut body, "stat", 2, &mut seen).await;
        // What /api/stat answers, the second a second after the first.
        assert_eq!(got[0].1["window_seconds"], 60.0);
        assert_eq!(got[1].1["rows"], serde_json::json!([]));
        let gap = got[1].0 - got[0].0;
        assert!(gap >= Duration::from_millis(900), "{gap:?}");
        assert_eq!(sources.streams.open(), 1);

        // The client leaves: its stream ends with it, nothing left running.
        drop(body);
        conn.abort();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sources.streams.open() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stream outlived its client"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_namespace_stream_sends_the_namespace_answer() {
        let (addr, sources, shutdown) = server(&[]).await;
        let path = "/api/stream/namespace?namespace=demo&interval=1s";
        let (rsp, conn) = send(addr, Method::GET, path, &addr.to_string()).await;
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()[header::CONTENT_TYPE], "text/event-stream");
        let mut body = rsp.into_body();
        let mut seen = String::new();
        let got = events(&mut body, "namespace", 2, &mut seen).await;
        // What /api/namespace answers, each time.
        for (_, doc) in &got {
            assert_eq!(doc["window_seconds"], 60.0);
            assert_eq!(doc["stat"]["deployment"], serde_json::json!([]));
            assert_eq!(doc["edges"], serde_json::json!([]));
        }
        assert_eq!(sources.streams.open(), 1);
        drop(body);
        conn.abort();
        shutdown.cancel();
    }

    #[tokio::test]
    async fn streams_say_what_is_wrong_before_they_start() {
        let (addr, sources, shutdown) = server(&[]).await;
        let host = addr.to_string();
        for (path, status, want) in [
            (
                "/api/stream/stat?resource=deploy&interval=1",
                400,
                "interval",
            ),
            (
                "/api/stream/stat?resource=deploy&interval=500ms",
                400,
                "from 1s",
            ),
            (
                "/api/stream/stat?resource=deploy&interval=1h",
                400,
                "to 10m",
            ),
            (
                "/api/stream/stat?resource=deployz",
                400,
                "unknown resource type",
            ),
            (
                "/api/stream/stat?resource=svc&to=deploy/a",
                400,
                "made of pods",
            ),
            (
                "/api/stream/stat?resource=deploy&seconds=2",
                400,
                "unknown parameter",
            ),
            ("/api/stream/namespace", 400, "namespace is required"),
            (
                "/api/stream/namespace?namespace=demo&interval=0s",
                400,
                "from 1s",
            ),
            ("/api/stream/tap", 400, "resource is required"),
            (
                "/api/stream/tap?resource=deploy&interval=2s",
                400,
                "unknown parameter",
            ),
            // The tap API's own refusal: tap is off without identity.
            (
                "/api/stream/tap?resource=deploy/web&namespace=demo",
                503,
                "no identity",
            ),
        ] {
            let (rsp, _) = send(addr, Method::GET, path, &host).await;
            assert_eq!(rsp.status().as_u16(), status, "{path}");
            let body: serde_json::Value = serde_json::from_str(&text(rsp).await).unwrap();
            let message = body["error"].as_str().unwrap();
            assert!(message.contains(want), "{path}: {message}");
        }
        assert_eq!(sources.streams.open(), 0);
        shutdown.cancel();
    }
}
