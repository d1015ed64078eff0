//! Tap end to end, in process on loopback, with the controller's real identity
//! service: a tonic client holding the control plane's tap identity observes the
//! requests a test sends through a proxy (only those its filter names, secrets
//! redacted); the tap port refuses plaintext and every other identity, and counts
//! the refusals.

use crate::support::{
    control_plane::{self, ControlPlane, WithIdentity},
    *,
};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use mesh_api::tap::{
    observe_request::{
        r#match::{self as m, http::Match as HttpMatch, string_match},
        Extract, Match,
    },
    tap_client::TapClient,
    tap_event::{http::Event, ProxyDirection},
    ObserveRequest, TapEvent,
};
use mesh_proxy::tls::{Alpn, MeshTls};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

const WEB: &str = "web.default.serviceaccount.identity.mesh.cluster.local";

/// The controller with identity on: tokens for `default/web` and for the control
/// plane's tap service account.
async fn mesh() -> ControlPlane {
    let identity = WithIdentity {
        tokens: "web-token default/web\nmesh-tap-token mesh-system/mesh-tap\n",
        lifetime: Duration::from_secs(3600),
    };
    control_plane::start("services: []\n", Some(identity)).await
}

/// A proxy holding the identity of account `sa` in `ns`, once it has its certificate.
async fn meshed(cp: &ControlPlane, ns: &str, sa: &str, extra: &[(&str, &str)]) -> TestProxy {
    let token = cp.dir.path().join(format!("{sa}.token"));
    std::fs::write(&token, format!("{sa}-token")).unwrap();
    let mut env = vec![
        (
            "MESH_PROXY_IDENTITY_ADDR",
            cp.running.identity_addr.unwrap().to_string(),
        ),
        (
            "MESH_PROXY_IDENTITY_NAME",
            mesh_api::names::ServiceAccount::new(ns, sa).identity("cluster.local"),
        ),
        (
            "MESH_PROXY_IDENTITY_TOKEN_FILE",
            token.display().to_string(),
        ),
        ("MESH_PROXY_IDENTITY_TRUST_ANCHORS", cp.anchor.clone()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let p = proxy(&env).await;
    wait_until("the proxy holds a certificate", || p.proxy.is_ready()).await;
    p
}

/// A tap client over mesh TLS with `tls`'s identity, to the proxy `server` at `addr`.
async fn tap_client(
    tls: Arc<MeshTls>,
    addr: SocketAddr,
    server: &'static str,
) -> Result<TapClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_static("http://tap.test")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let tls = tls.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let s = tls
                    .connect(tcp, server, Alpn::H2)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        }))
        .await?;
    Ok(TapClient::new(channel))
}

fn path_prefix(limit: u32, p: &str) -> ObserveRequest {
    ObserveRequest {
        limit,
        r#match: Some(Match {
            r#match: Some(m::Match::Http(m::Http {
                r#match: Some(HttpMatch::Path(m::StringMatch {
                    r#match: Some(string_match::Match::Prefix(p.into())),
                })),
            })),
        }),
        extract: Some(Extract { headers: true }),
        max_rps: 0,
    }
}

fn event(e: &TapEvent) -> &Event {
    e.http.as_ref().unwrap().event.as_ref().unwrap()
}

fn header<'a>(headers: &'a [mesh_api::tap::Header], name: &str) -> &'a [u8] {
    &headers
        .iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_shows_the_requests_it_matches_with_secrets_redacted() {
    let cp = mesh().await;
    let backend = backend().await;
    let web = meshed(
        &cp,
        "default",
        "web",
        &[("MESH_PROXY_TAP_REDACT_HEADERS", "X-Api-Key, x-session")],
    )
    .await;
    let tapper = meshed(&cp, "mesh-system", "mesh-tap", &[]).await;
    let tap_addr = web.tap.expect("the tap server runs with identity");
    let tls = tapper.proxy.tls().unwrap().clone();
    let mut client = tap_client(tls, tap_addr, WEB).await.unwrap();
    let mut events = client
        .observe(path_prefix(2, "/tapped"))
        .await
        .unwrap()
        .into_inner();
    web.wait_metric("tap_subscribers 1").await;

    for path in [
        "/untapped",
        "/tapped/1",
        "/untapped/2",
        "/tapped/2",
        "/tapped/3",
    ] {
        let mut send = h1(web.outbound).await;
        let mut req = get(&format!("http://{backend}{path}"));
        for (name, value) in [
            ("authorization", "Bearer s3cret"),
            ("cookie", "session=s3cret"),
            ("x-api-key", "s3cret"),
            ("x-visible", "yes"),
        ] {
            req.headers_mut().insert(name, value.parse().unwrap());
        }
        let rsp = send.send_request(req).await.unwrap();
        assert_eq!(rsp.status(), 200, "{path}");
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello\n", "{path}");
    }

    // The stream ends by itself: two requests tapped, and both ended.
    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), events.message()).await;
        match next.expect("the stream ends after its limit") {
            Ok(Some(e)) => seen.push(e),
            Ok(None) => break,
            Err(status) => panic!("{status}"),
        }
    }
    assert_eq!(seen.len(), 6, "{seen:#?}");
    let mut paths = Vec::new();
    for (i, e) in seen.iter().enumerate() {
        assert_eq!(e.proxy_direction, ProxyDirection::Outbound as i32);
        assert_eq!(e.destination, Some(backend.into()));
        let source: SocketAddr = e.source.as_ref().unwrap().try_into().unwrap();
        assert!(source.ip().is_loopback(), "{source}");
        assert!(!e.tls, "plaintext to the backend");
        match (i % 3, event(e)) {
            (0, Event::RequestInit(r)) => {
                assert_eq!((&*r.method, &*r.authority), ("GET", &*backend.to_string()));
                for secret in ["authorization", "cookie", "x-api-key"] {
                    assert_eq!(header(&r.headers, secret), b"[redacted]", "{secret}");
                }
                assert_eq!(header(&r.headers, "x-visible"), b"yes");
                paths.push(r.path.clone());
            }
            (1, Event::ResponseInit(r)) => assert_eq!(r.http_status, 200),
            (2, Event::ResponseEnd(r)) => {
                assert_eq!(r.response_bytes, 6);
                assert_eq!(r.end, None);
            }
            _ => panic!("event {i} out of order: {seen:#?}"),
        }
    }
    assert_eq!(paths, ["/tapped/1", "/tapped/2"]);
    web.wait_metric("tap_subscribers 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_port_refuses_plaintext_and_every_other_identity() {
    let cp = mesh().await;
    let web = meshed(&cp, "default", "web", &[]).await;
    let tap_addr = web.tap.expect("the tap server runs with identity");
    let req = || ObserveRequest {
        limit: 1,
        ..Default::default()
    };

    // Plaintext gRPC.
    let plaintext = async {
        let channel = Endpoint::from_shared(format!("http://{tap_addr}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        TapClient::new(channel)
            .observe(req())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    // The client's call must not succeed; how it fails is the client library's (the
    // proxy's side, asserted below, is the refusal counted). Bounded: once, at the end
    // of a loaded CI run, tonic's call outlived the closed connection for minutes.
    let outcome = tokio::time::timeout(CLIENT_WAIT, plaintext).await;
    assert!(!matches!(outcome, Ok(Ok(()))), "plaintext is refused");
    // The client may have tried more than once.
    refusals(&web, "plaintext").await;
    assert!(web
        .metrics()
        .contains(r#"tap_refused_total{reason="unauthorized"} 0"#));

    // Mesh TLS with a valid certificate for another identity (the proxy's own).
    let tls = web.proxy.tls().unwrap().clone();
    let other = async {
        let mut c = tap_client(tls, tap_addr, WEB)
            .await
            .map_err(|e| e.to_string())?;
        c.observe(req()).await.map(drop).map_err(|e| e.to_string())
    };
    let outcome = tokio::time::timeout(CLIENT_WAIT, other).await;
    assert!(
        !matches!(outcome, Ok(Ok(()))),
        "another identity is refused"
    );
    refusals(&web, "unauthorized").await;
    let m = web.metrics();
    assert!(
        m.contains(r#"tap_refused_total{reason="handshake"} 0"#),
        "{m}"
    );
    assert!(m.contains("tap_subscribers 0"), "{m}");
}

/// How long a refused client's call is given to fail.
const CLIENT_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Waits until `p` has counted a tap refusal for `reason`; returns how many.
async fn refusals(p: &TestProxy, reason: &str) -> u64 {
    let series = format!("tap_refused_total{{reason=\"{reason}\"}} ");
    let count = || {
        p.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_until("a refusal is counted", || count() > 0).await;
    count()
}

#[tokio::test]
async fn without_identity_there_is_no_tap_server() {
    let p = proxy(&[]).await;
    assert_eq!(p.tap, None);
    assert!(!p.metrics().contains("tap_"), "{}", p.metrics());
}
