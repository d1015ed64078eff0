//! Mutual TLS between two proxies, in process on loopback, with the controller's real
//! identity and destination services (file backend): HTTP/1 travels between proxies
//! as HTTP/2 over TLS and comes out as HTTP/1 with the client's identity; metrics
//! name both identities; a server with another identity than discovery announced, a
//! plaintext request posing as a proxy, are refused and counted; the application's
//! own TLS and opaque TCP pass through.

use crate::support::{
    control_plane::{self, ControlPlane, WithIdentity},
    *,
};
use http_body_util::BodyExt;
use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{convert::Infallible, net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub(crate) const WEB: &str = "web.default.serviceaccount.identity.mesh.cluster.local";
pub(crate) const API: &str = "api.default.serviceaccount.identity.mesh.cluster.local";

/// The controller, with identity on (tokens `web`, `api` and `other` for those
/// accounts) and discovery from a file the test writes.
pub(crate) async fn mesh() -> ControlPlane {
    let identity = WithIdentity {
        tokens: "web-token default/web\napi-token default/api\nother-token default/other\n",
        lifetime: Duration::from_secs(3600),
    };
    control_plane::start("services: []\n", Some(identity)).await
}

impl ControlPlane {
    /// A proxy for account `sa` that discovers through the controller, forwarding
    /// inbound traffic to `app`.
    pub(crate) async fn proxy(&self, sa: &str, app: SocketAddr) -> TestProxy {
        self.proxy_with(sa, app, &[]).await
    }

    /// [`Self::proxy`], with `extra` settings last (so overriding the others).
    pub(crate) async fn proxy_with(
        &self,
        sa: &str,
        app: SocketAddr,
        extra: &[(&str, String)],
    ) -> TestProxy {
        let token = self.dir.path().join(format!("{sa}.token"));
        std::fs::write(&token, format!("{sa}-token")).unwrap();
        let mut env = vec![
            (
                "MESH_PROXY_IDENTITY_ADDR",
                self.running.identity_addr.unwrap().to_string(),
            ),
            (
                "MESH_PROXY_IDENTITY_NAME",
                mesh_api::names::ServiceAccount::new("default", sa).identity("cluster.local"),
            ),
            (
                "MESH_PROXY_IDENTITY_TOKEN_FILE",
                token.display().to_string(),
            ),
            ("MESH_PROXY_IDENTITY_TRUST_ANCHORS", self.anchor.clone()),
            (
                "MESH_PROXY_DESTINATION_ADDR",
                self.running.destination_addr.to_string(),
            ),
            ("MESH_PROXY_INBOUND_FORWARD_ADDR", app.to_string()),
        ];
        env.extend(extra.iter().cloned());
        let p = proxy(&env).await;
        wait_until("the proxy holds a certificate", || p.proxy.is_ready()).await;
        p
    }

    /// Discovery: service `api` in `default` is the proxy at `inbound`, announced as
    /// having `identity`. Returns once the controller serves it, so that no proxy asks
    /// before and, told the name is unknown, falls back to DNS (off this machine).
    pub(crate) async fn announce(&self, inbound: SocketAddr, identity: &str) {
        let sa = identity.split('.').next().unwrap();
        let yaml = format!(
            "services:\n  - name: api\n    namespace: default\n    ports: [{{port: 80}}]\n    endpoints:\n      - address: {inbound}\n        labels: {{pod: api-0, serviceaccount: {sa}}}\n        identity: {identity}\n"
        );
        std::fs::write(self.dir.path().join("discovery.yaml"), yaml).unwrap();
        let index = &self.running.index;
        let target = index.parse("api.default.svc.cluster.local:80", "").unwrap();
        let mut sub = index.subscribe(target);
        let served =
            async { while !sub.next().await.endpoints.iter().any(|e| e.addr == inbound) {} };
        tokio::time::timeout(Duration::from_secs(15), served)
            .await
            .expect("the controller never served the announced endpoint");
    }
}

/// An application that answers with the HTTP version it was spoken to in and the
/// `mesh-client-id` header it got.
pub(crate) async fn app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let id = req
                        .headers()
                        .get("mesh-client-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    let body = format!("{:?} {} {id}", req.version(), req.uri());
                    Ok::<_, Infallible>(Response::new(body))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// `GET url` through the explicit outbound proxy at `via`, over HTTP/1.
pub(crate) async fn get_via(via: SocketAddr, url: &str) -> (u16, String, Option<String>) {
    let mut send = h1(via).await;
    let rsp = send.send_request(get(url)).await.unwrap();
    let status = rsp.status().as_u16();
    let error = rsp
        .headers()
        .get("mesh-proxy-error")
        .map(|v| v.to_str().unwrap().to_string());
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), error)
}

/// An opaque tunnel to `api` through `client` (CONNECT, which the client proxy
/// carries as mesh TLS announcing opaque bytes), once discovery resolves the name.
pub(crate) async fn tunnel(client: &TestProxy) -> TcpStream {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(client.outbound).await.unwrap();
        s.write_all(b"CONNECT api.default.svc.cluster.local:80 HTTP/1.1\r\nHost: api.default.svc.cluster.local:80\r\n\r\n")
            .await
            .unwrap();
        let head = read_until(&mut s, "\r\n\r\n").await;
        if head.starts_with("HTTP/1.1 200") {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{head}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) const URL: &str = "http://api.default.svc.cluster.local/hello";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_http1_head_crosses_the_http2_hop() {
    let mesh = mesh().await;
    let server = mesh.proxy("api", app().await).await;
    mesh.announce(server.inbound, API).await;
    let client = mesh.proxy("web", app().await).await;
    // 40 KiB of header fields: within HTTP/1's limit (408 KiB), far over the 16 KiB
    // hyper's HTTP/2 would take by default, which the request crosses between the
    // proxies.
    let big = "x".repeat(1024);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut send = h1(client.outbound).await;
        let mut req = get(URL);
        for i in 0..40 {
            req.headers_mut().insert(
                format!("x-big-{i}").parse::<http::HeaderName>().unwrap(),
                big.parse().unwrap(),
            );
        }
        let rsp = send.send_request(req).await.unwrap();
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        if status == 200 {
            assert_eq!(body, format!("HTTP/1.1 /hello {WEB}"));
            break;
        }
        // Until discovery has read the file, the name does not resolve (502); a head
        // the hop refused would stay refused.
        assert!(
            tokio::time::Instant::now() < deadline,
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_between_proxies_is_mutual_tls_over_http2() {
    let mesh = mesh().await;
    let server = mesh.proxy("api", app().await).await;
    mesh.announce(server.inbound, API).await;
    let client = mesh.proxy("web", app().await).await;

    // Discovery may take a moment to see the file: until then the name does not resolve.
    let mut answer = get_via(client.outbound, URL).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while answer.0 != 200 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = get_via(client.outbound, URL).await;
    }
    let (status, body, error) = answer;
    assert_eq!(status, 200, "{body} {error:?}");
    // The application got HTTP/1.1, in origin form, and the client's verified identity.
    assert_eq!(body, format!("HTTP/1.1 /hello {WEB}"));

    // Between the proxies: one TLS connection carrying HTTP/2, both identities known.
    let m = server
        .wait_metric(&format!(
            "response_total{{direction=\"inbound\",target_addr=\"{}\",tls=\"true\",client_id=\"{WEB}\"",
            server.proxy.config.listen.inbound_forward_addr.unwrap()
        ))
        .await;
    assert!(
        m.contains("protocol_detect_total{direction=\"inbound\",result=\"h2\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "tcp_open_total{{direction=\"inbound\",peer=\"src\",target_addr=\"{}\",tls=\"true\",client_id=\"{WEB}\"}} 1",
            server.proxy.config.listen.inbound_forward_addr.unwrap()
        )),
        "{m}"
    );
    let m = client
        .wait_metric(&format!(
            "response_total{{direction=\"outbound\",authority=\"api.default.svc.cluster.local:80\",target_addr=\"{}\",tls=\"true\",server_id=\"{API}\"",
            server.inbound
        ))
        .await;
    assert!(
        m.contains(&format!(
            "tcp_open_total{{direction=\"outbound\",peer=\"dst\",target_addr=\"{}\",tls=\"true\",server_id=\"{API}\"",
            server.inbound
        )),
        "{m}"
    );

    // Many requests, on several client connections, share the one mesh connection.
    for _ in 0..5 {
        assert_eq!(get_via(client.outbound, URL).await.0, 200);
    }
    let m = server.metrics();
    assert!(
        m.contains("protocol_detect_total{direction=\"inbound\",result=\"h2\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_identity_than_announced_is_refused() {
    let mesh = mesh().await;
    let server = mesh.proxy("api", app().await).await;
    // Discovery says the endpoint is `web`'s, but the proxy there proves `api`.
    mesh.announce(server.inbound, WEB).await;
    let client = mesh.proxy("web", app().await).await;
    let mut answer = get_via(client.outbound, URL).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while answer.0 == 502
        && answer.2.as_deref().is_some_and(|e| e.contains("resolve"))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = get_via(client.outbound, URL).await;
    }
    let (status, _, error) = answer;
    assert_eq!(status, 502);
    let error = error.unwrap();
    assert!(error.contains("wrong_identity"), "{error}");
    client
        .wait_metric("tls_refused_total{direction=\"outbound\",reason=\"wrong_identity\"} 1")
        .await;
    // The server saw the client give up on it.
    server
        .wait_metric("tls_refused_total{direction=\"inbound\",reason=\"peer_refused\"} 1")
        .await;
    assert!(!server.metrics().contains("tls=\"true\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_served_but_may_not_claim_an_identity() {
    let mesh = mesh().await;
    let server = mesh.proxy("api", app().await).await;
    let plain = raw(
        server.inbound,
        b"GET /x HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
        "",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
    assert!(plain.ends_with("HTTP/1.1 /x -"), "{plain}");
    for claim in [
        format!("mesh-client-id: {WEB}"),
        "mesh-orig-proto: HTTP/1.1".to_string(),
    ] {
        let req = format!("GET /x HTTP/1.1\r\nHost: api\r\n{claim}\r\nConnection: close\r\n\r\n");
        let rsp = raw(server.inbound, req.as_bytes(), "").await;
        assert!(rsp.starts_with("HTTP/1.1 403"), "{rsp}");
    }
    server
        .wait_metric("tls_refused_total{direction=\"inbound\",reason=\"plaintext_claim\"} 2")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_tls_and_opaque_tcp_pass_through() {
    let mesh = mesh().await;
    let echo = tcp_echo(None).await;
    let server = mesh.proxy("api", echo).await;

    // The application's own TLS (a ClientHello for another name) reaches the
    // application byte for byte: the proxy does not terminate it.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03,
    ];
    hello.extend([9u8; 32]);
    hello.extend([0, 0, 2, 0x13, 0x01, 1, 0, 0, 0]);
    let mut s = TcpStream::connect(server.inbound).await.unwrap();
    s.write_all(&hello).await.unwrap();
    let mut back = vec![0; hello.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("echoed")
        .unwrap();
    assert_eq!(back, hello);
    drop(s);

    // Opaque TCP between proxies: CONNECT through the client proxy becomes mesh TLS
    // announcing opaque bytes, which the server forwards untouched.
    mesh.announce(server.inbound, API).await;
    let client = mesh.proxy("web", app().await).await;
    let mut s = tunnel(&client).await;
    s.write_all(b"opaque bytes").await.unwrap();
    let mut got = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("echoed")
        .unwrap();
    assert_eq!(&got, b"opaque bytes");
    server
        .wait_metric(&format!(
            "tcp_open_total{{direction=\"inbound\",peer=\"src\",target_addr=\"{echo}\",tls=\"true\",client_id=\"{WEB}\"}} 1"
        ))
        .await;
    server
        .wait_metric("protocol_detect_total{direction=\"inbound\",result=\"opaque_port\"} 1")
        .await;
}
