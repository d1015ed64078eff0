//! Inbound authorization policy, in process on loopback: a server proxy (`api`) whose
//! policy comes from a fake `InboundPolicies` service (TLS, as the destination
//! service's), and client proxies with real mesh identities (`web`, `other`) from the
//! controller's identity service. The proxies run in explicit mode, where loopback
//! clients are clients like any other (every workload of a host is loopback there).

use crate::{
    mtls::{app, get_via, mesh, tunnel, API, URL, WEB},
    support::{control_plane::ControlPlane, controller::FakePolicies, *},
};
use mesh_api::policy as api;
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const OTHER: &str = "other.default.serviceaccount.identity.mesh.cluster.local";

fn meta(kind: &str, name: &str) -> Option<api::Meta> {
    Some(api::Meta {
        group: "policy.mesh.rs".into(),
        kind: kind.into(),
        name: name.into(),
    })
}

/// Server `api`: only `ids` (each authorization named for its account), everywhere.
fn allow(ids: &[&str], opaque: bool) -> api::InboundPolicy {
    let everyone = |cidr: &str| {
        let (ip, len) = cidr.split_once('/').unwrap();
        api::Network {
            net: Some(api::IpNet {
                ip: Some(ip.parse::<std::net::IpAddr>().unwrap().into()),
                prefix_len: len.parse().unwrap(),
            }),
            except: vec![],
        }
    };
    api::InboundPolicy {
        server: meta("server", "api"),
        protocol: Some(api::Protocol {
            kind: Some(if opaque {
                api::protocol::Kind::Opaque(Default::default())
            } else {
                api::protocol::Kind::Detect(Default::default())
            }),
        }),
        authorizations: ids
            .iter()
            .map(|id| api::Authz {
                meta: meta("authorizationpolicy", id.split('.').next().unwrap()),
                networks: vec![everyone("0.0.0.0/0"), everyone("::/0")],
                authentication: Some(api::Authentication {
                    permit: Some(api::authentication::Permit::MeshTls(
                        api::authentication::MeshTls {
                            identities: vec![id.to_string()],
                            suffixes: vec![],
                        },
                    )),
                }),
            })
            .collect(),
        http_routes: vec![],
        fallback: api::Fallback::Deny as i32,
    }
}

/// The fake policy service, with the certificate the destination service presents.
async fn policy_service(mesh: &ControlPlane, policies: &FakePolicies) -> controller::Running {
    let name = mesh_api::control_plane::service_identity(
        mesh_api::control_plane::DESTINATION_SERVICE_ACCOUNT,
        mesh_api::control_plane::NAMESPACE,
        "cluster.local",
    );
    let tls = mesh_controller::identity::tls::self_issued_server(
        mesh.ca.clone().expect("identity is on"),
        &name,
    )
    .unwrap();
    policies.serve(tls).await
}

/// The `api` proxy in front of `app`, its policy from `policies` at `at`, and
/// announced to discovery; returns once it applied its first policy.
async fn api_proxy(mesh: &ControlPlane, app: SocketAddr, at: SocketAddr) -> TestProxy {
    let server = mesh
        .proxy_with(
            "api",
            app,
            &[
                ("MESH_PROXY_DESTINATION_ADDR", at.to_string()),
                (
                    "MESH_PROXY_POLICY_WORKLOAD",
                    r#"{"ns":"default","pod":"api-0"}"#.to_string(),
                ),
                ("MESH_PROXY_INBOUND_PORTS", app.port().to_string()),
                ("MESH_PROXY_INBOUND_DEFAULT_POLICY", "deny".to_string()),
            ],
        )
        .await;
    let policies = server.proxy.policy().expect("policy is on");
    wait_until("the proxy applies its policy", || {
        policies
            .updates(app.port())
            .is_some_and(|(applied, _)| applied >= 1)
    })
    .await;
    mesh.announce(server.inbound, API).await;
    server
}

/// `GET URL` through `client`, once discovery resolves the name.
async fn get_settled(client: &TestProxy) -> (u16, String, Option<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get_via(client.outbound, URL).await;
        let unresolved =
            answer.0 == 502 && answer.2.as_deref().is_some_and(|e| e.contains("resolve"));
        if !unresolved || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET URL` through `client` until it answers `status`.
async fn until_status(client: &TestProxy, status: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = get_via(client.outbound, URL).await;
        if answer.0 == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never answered {status}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn value(p: &TestProxy, series: &str) -> Option<u64> {
    p.metrics().lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_authorized_per_request_and_updates_apply_at_the_next_request() {
    let mesh = mesh().await;
    let policies = FakePolicies::default();
    let app_addr = app().await;
    let port = app_addr.port();
    policies.set(port, allow(&[WEB], false));
    let running = policy_service(&mesh, &policies).await;
    let server = api_proxy(&mesh, app_addr, running.addr).await;
    let web = mesh.proxy("web", app().await).await;
    let other = mesh.proxy("other", app().await).await;

    let (status, body, error) = get_settled(&web).await;
    assert_eq!(status, 200, "{body} {error:?}");
    assert_eq!(body, format!("HTTP/1.1 /hello {WEB}"));
    let (status, _, error) = get_settled(&other).await;
    assert_eq!(status, 403);
    assert_eq!(
        error.as_deref(),
        Some("unauthorized request on route default/default of server policy.mesh.rs/server/api")
    );

    // A plaintext client has no identity: refused.
    let plain = raw(
        server.inbound,
        b"GET /x HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
        "",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 403"), "{plain}");
    // A gRPC client is told PERMISSION_DENIED.
    let mut send = h2(server.inbound).await;
    let mut req = get("/pkg.Service/Method");
    *req.method_mut() = http::Method::POST;
    req.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    let rsp = send.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["grpc-status"], "7");
    assert!(rsp.headers()["grpc-message"]
        .to_str()
        .unwrap()
        .starts_with("unauthorized request"));

    let srv = format!(
        "srv_group=\"policy.mesh.rs\",srv_kind=\"server\",srv_name=\"api\",srv_port=\"{port}\",route_group=\"\",route_kind=\"default\",route_name=\"default\""
    );
    server
        .wait_metric(&format!(
            "inbound_http_authz_allow_total{{{srv},authz_group=\"policy.mesh.rs\",authz_kind=\"authorizationpolicy\",authz_name=\"web\",tls=\"true\",client_id=\"{WEB}\"}} 1"
        ))
        .await;
    server
        .wait_metric(&format!(
            "inbound_http_authz_deny_total{{{srv},tls=\"true\",client_id=\"{OTHER}\"}} 1"
        ))
        .await;
    let m = server
        .wait_metric(&format!(
            "inbound_http_authz_deny_total{{{srv},tls=\"false\"}} 2"
        ))
        .await;
    // Denials are answered by the proxy, counted in the golden metrics with their
    // reason; the application never saw them.
    assert!(m.contains("error=\"unauthorized\""), "{m}");

    // The policy changes: `other` in, `web` out, at the next request on the
    // connections already open.
    let web_conns = format!(
        "tcp_open_total{{direction=\"inbound\",peer=\"src\",target_addr=\"{app_addr}\",tls=\"true\",client_id=\"{WEB}\"}}"
    );
    assert_eq!(value(&server, &web_conns), Some(1));
    policies.set(port, allow(&[OTHER], false));
    until_status(&web, 403).await;
    assert_eq!(get_via(other.outbound, URL).await.0, 200);
    assert_eq!(value(&server, &web_conns), Some(1), "the same connection");

    // A malformed update (an authorization without networks) is refused; the last
    // good policy stays in force.
    let mut bad = allow(&[WEB], false);
    bad.authorizations[0].networks.clear();
    policies.set(port, bad);
    let watch = server.proxy.policy().unwrap();
    wait_until("the proxy refuses the update", || {
        watch.updates(port).is_some_and(|(_, refused)| refused == 1)
    })
    .await;
    assert_eq!(get_via(web.outbound, URL).await.0, 403);
    assert_eq!(get_via(other.outbound, URL).await.0, 200);

    // The policy service goes away: the last policy is still enforced.
    running.kill();
    for _ in 0..3 {
        assert_eq!(get_via(web.outbound, URL).await.0, 403);
        assert_eq!(get_via(other.outbound, URL).await.0, 200);
    }
}

/// A TCP application that counts the connections it accepted, and echoes.
async fn counting_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, accepted)
}

/// Whether the tunnel echoes `msg`; `false` when it was closed instead.
async fn echoes(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await {
        Ok(Ok(_)) => got == msg,
        Ok(Err(_)) => false,
        Err(_) => panic!("the tunnel neither echoed nor closed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_is_refused_before_the_app_and_closed_when_no_longer_allowed() {
    let mesh = mesh().await;
    let policies = FakePolicies::default();
    let (echo, accepted) = counting_echo().await;
    let port = echo.port();
    policies.set(port, allow(&[WEB], true));
    let running = policy_service(&mesh, &policies).await;
    let server = api_proxy(&mesh, echo, running.addr).await;
    let web = mesh.proxy("web", app().await).await;
    let other = mesh.proxy("other", app().await).await;

    // `other` is refused before anything reaches the application.
    let mut s = tunnel(&other).await;
    assert!(!echoes(&mut s, b"let me in").await);
    let srv = format!(
        "srv_group=\"policy.mesh.rs\",srv_kind=\"server\",srv_name=\"api\",srv_port=\"{port}\""
    );
    server
        .wait_metric(&format!(
            "inbound_tcp_authz_deny_total{{{srv},tls=\"true\",client_id=\"{OTHER}\"}} 1"
        ))
        .await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    // A plaintext client too.
    let mut plain = TcpStream::connect(server.inbound).await.unwrap();
    assert!(!echoes(&mut plain, b"hello").await);
    assert_eq!(accepted.load(Ordering::SeqCst), 0);

    // `web` is let in; when the policy stops allowing it, its connection is closed.
    let mut s = tunnel(&web).await;
    assert!(echoes(&mut s, b"opaque bytes").await);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    server
        .wait_metric(&format!(
            "inbound_tcp_authz_allow_total{{{srv},authz_group=\"policy.mesh.rs\",authz_kind=\"authorizationpolicy\",authz_name=\"web\",tls=\"true\",client_id=\"{WEB}\"}} 1"
        ))
        .await;
    policies.set(port, allow(&[OTHER], true));
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    server
        .wait_metric(&format!(
            "inbound_tcp_authz_terminate_total{{{srv},tls=\"true\",client_id=\"{WEB}\"}} 1"
        ))
        .await;
}

/// A proxy in front of `backend` with policy on, its controller never reachable.
async fn unreachable_controller(default: &str, backend: SocketAddr) -> TestProxy {
    let (nowhere, _held) = refusing();
    proxy(&[
        ("MESH_PROXY_DESTINATION_ADDR", nowhere.to_string()),
        (
            "MESH_PROXY_POLICY_WORKLOAD",
            r#"{"ns":"default","pod":"api-0"}"#.to_string(),
        ),
        ("MESH_PROXY_INBOUND_DEFAULT_POLICY", default.to_string()),
        ("MESH_PROXY_POLICY_TIMEOUT", "100ms".to_string()),
        ("MESH_PROXY_INBOUND_FORWARD_ADDR", backend.to_string()),
    ])
    .await
}

/// A plaintext `GET /x` to `to`: the whole response.
async fn plain_get(to: SocketAddr) -> String {
    raw(
        to,
        b"GET /x HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
        "",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_controller_the_default_applies() {
    let backend = backend().await;

    // `deny`: refused, with which server said so; the admin port stays reachable.
    let p = unreachable_controller("deny", backend).await;
    let rsp = plain_get(p.inbound).await;
    assert!(rsp.starts_with("HTTP/1.1 403"), "{rsp}");
    assert!(
        rsp.contains("mesh-proxy-error: unauthorized request on route default/default of server default/deny"),
        "{rsp}"
    );
    for path in ["/live", "/ready"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        let rsp = raw(p.admin, req.as_bytes(), "").await;
        assert!(rsp.starts_with("HTTP/1.1 200"), "{path}: {rsp}");
    }
    p.wait_metric(&format!(
        "inbound_http_authz_deny_total{{srv_group=\"\",srv_kind=\"default\",srv_name=\"deny\",srv_port=\"{}\",route_group=\"\",route_kind=\"default\",route_name=\"default\",tls=\"false\"}} 1",
        backend.port()
    ))
    .await;

    // `all-authenticated`: a plaintext client is refused.
    let p = unreachable_controller("all-authenticated", backend).await;
    let rsp = plain_get(p.inbound).await;
    assert!(rsp.starts_with("HTTP/1.1 403"), "{rsp}");

    // `audit`: allowed, and counted as the denial it would have been.
    let p = unreachable_controller("audit", backend).await;
    let rsp = plain_get(p.inbound).await;
    assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    p.wait_metric(&format!(
        "inbound_http_authz_audit_total{{srv_group=\"\",srv_kind=\"default\",srv_name=\"audit\",srv_port=\"{}\",route_group=\"\",route_kind=\"default\",route_name=\"default\",tls=\"false\"}} 1",
        backend.port()
    ))
    .await;
    assert!(!p.metrics().contains("inbound_http_authz_deny_total{"));

    // `all-unauthenticated` (the default): allowed.
    let p = unreachable_controller("all-unauthenticated", backend).await;
    let rsp = plain_get(p.inbound).await;
    assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_off_changes_nothing() {
    let backend = backend().await;
    let p = proxy(&[("MESH_PROXY_INBOUND_FORWARD_ADDR", backend.to_string())]).await;
    assert!(p.proxy.policy().is_none());
    let rsp = plain_get(p.inbound).await;
    assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    let m = p.wait_metric("response_total{direction=\"inbound\"").await;
    assert!(!m.contains("authz"), "{m}");
    assert!(!m.contains("route_not_found"), "{m}");
}
