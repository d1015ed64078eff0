//! ServiceProfiles applied by the proxy, in process on loopback with the controller's
//! real destination service (file backend): per-route metrics, retries of a flaky
//! route under the budget, no hammering of a dead backend, route timeouts, bodies too
//! large to replay, and a weighted traffic split.

use crate::support::{
    control_plane::{self, ControlPlane},
    *,
};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};
use tokio::net::TcpListener;

/// An application: `/flaky` fails half the requests (500, pseudo-randomly but the same
/// way every run), `/dead` always fails,
/// `/slow` answers after 300 ms, `/upload` reads the body; anything else is 200. Every
/// request is counted, and answered with the app's name.
struct App {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

async fn app(name: &'static str) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let hits = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let n = hits.fetch_add(1, Relaxed);
                    async move {
                        let path = req.uri().path().to_string();
                        let _ = req.into_body().collect().await;
                        let status = match path.as_str() {
                            "/flaky" if coin(n) => StatusCode::INTERNAL_SERVER_ERROR,
                            "/dead" => StatusCode::INTERNAL_SERVER_ERROR,
                            "/slow" => {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                StatusCode::OK
                            }
                            _ => StatusCode::OK,
                        };
                        let mut rsp = Response::new(Full::new(bytes::Bytes::from(name)));
                        *rsp.status_mut() = status;
                        Ok::<_, Infallible>(rsp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    App { addr, hits }
}

/// A fair coin for the `n`th request: a 64-bit mix of `n`, its low bit.
fn coin(n: u64) -> bool {
    let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) & 1 == 1
}

/// The budget of the dead-backend test: retries at most 20% of requests, plus 1 a
/// second over 10 s.
const TIGHT: &str = "{retryRatio: 0.2, minRetriesPerSecond: 1, ttl: 10s}";

const PROFILE: &str = r#"
      routes:
      - name: flaky
        condition: {pathRegex: /flaky}
        isRetryable: true
      - name: dead
        condition: {pathRegex: /dead}
        isRetryable: true
      - name: slow
        condition: {method: GET, pathRegex: /slow}
        timeout: 100ms
      - name: upload
        condition: {method: POST, pathRegex: /upload}
        isRetryable: true
"#;

struct Mesh {
    _control: ControlPlane,
    proxy: TestProxy,
}

/// The controller serving `web` (endpoint `web`, and `canary` when given) with
/// [`PROFILE`], the retry `budget` and `split` spec lines, and a proxy discovering
/// through it.
async fn mesh(web: SocketAddr, canary: Option<SocketAddr>, split: &str, budget: &str) -> Mesh {
    let mut yaml = format!(
        "services:\n  - name: web\n    namespace: default\n    endpoints: [{{address: '{web}'}}]\n"
    );
    if let Some(c) = canary {
        yaml.push_str(&format!(
            "  - name: web-canary\n    namespace: default\n    endpoints: [{{address: '{c}'}}]\n"
        ));
    }
    yaml.push_str(
        "profiles:\n  - apiVersion: mesh.rs/v1alpha1\n    kind: ServiceProfile\n    metadata: {name: web.default.svc.cluster.local}\n",
    );
    yaml.push_str(&format!("    spec:\n      retryBudget: {budget}\n"));
    yaml.push_str(PROFILE.trim_start_matches('\n'));
    yaml.push_str(split);
    let control = control_plane::start(&yaml, None).await;
    let proxy = proxy(&[(
        "MESH_PROXY_DESTINATION_ADDR",
        control.running.destination_addr.to_string(),
    )])
    .await;
    Mesh {
        _control: control,
        proxy,
    }
}

/// `METHOD path` to `web` through the proxy, with `body`: status, `mesh-proxy-error`.
async fn call(
    p: &TestProxy,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, Option<String>, String) {
    let mut send = h1(p.outbound).await;
    let req = Request::builder()
        .method(method)
        .uri(format!("http://web.default.svc.cluster.local{path}"))
        .body(
            Full::new(bytes::Bytes::from(body))
                .map_err(|n| match n {})
                .boxed(),
        )
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    let status = rsp.status().as_u16();
    let error = rsp
        .headers()
        .get("mesh-proxy-error")
        .map(|v| v.to_str().unwrap().to_string());
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, error, String::from_utf8_lossy(&body).into_owned())
}

/// A metric's value, with exactly these labels first (prefix match on the series).
fn metric(p: &TestProxy, series: &str) -> u64 {
    p.metrics()
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

const DST: &str = "dst=\"web.default.svc.cluster.local:80\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_route_is_retried_to_success_within_the_budget() {
    let web = app("web").await;
    // A generous budget: retries up to as many as requests.
    let m = mesh(
        web.addr,
        None,
        "",
        "{retryRatio: 1.0, minRetriesPerSecond: 10, ttl: 10s}",
    )
    .await;
    // The first request waits for the profile, as for endpoints.
    for _ in 0..50 {
        let (status, error, _) = call(&m.proxy, "GET", "/flaky", vec![]).await;
        assert_eq!(status, 200, "{error:?}");
    }
    // Half the attempts failed; each failure was retried.
    let hits = web.hits.load(Relaxed);
    let failures = (0..hits).filter(|n| coin(*n)).count() as u64;
    assert_eq!(
        hits - 50,
        failures,
        "every failed attempt, and only those, retried"
    );
    assert!(
        failures >= 20,
        "the route really was flaky: {failures} failures"
    );
    let p = &m.proxy;
    let route = format!("direction=\"outbound\",{DST},rt_route=\"flaky\"");
    p.wait_metric(&format!("route_response_total{{{route},status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} 50")).await;
    assert_eq!(metric(p, &format!("route_request_total{{{route}}}")), 50);
    assert_eq!(
        metric(p, &format!("route_actual_request_total{{{route}}}")),
        hits
    );
    assert_eq!(
        metric(p, &format!("route_actual_response_total{{{route},status_code=\"500\",classification=\"failure\"")),
        failures
    );
    assert_eq!(
        metric(
            p,
            &format!("route_retryable_total{{{DST},rt_route=\"flaky\"}}")
        ),
        failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_not_hammered() {
    let web = app("web").await;
    let m = mesh(web.addr, None, "", TIGHT).await;
    let n = 200;
    for _ in 0..n {
        let (status, _, _) = call(&m.proxy, "GET", "/dead", vec![]).await;
        assert_eq!(status, 500);
    }
    // Retries are at most 20% of requests plus 1/s for the 10 s window.
    let hits = web.hits.load(Relaxed);
    let retries = hits - n;
    assert!(
        retries <= n / 5 + 10 + 1,
        "{retries} retries for {n} requests"
    );
    assert!(retries >= 10, "some retries happened: {retries}");
    assert!(
        metric(
            &m.proxy,
            &format!("route_retryable_total{{{DST},rt_route=\"dead\",skipped=\"no_budget\"}}")
        ) >= n - retries - 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_route_times_out() {
    let web = app("web").await;
    let m = mesh(web.addr, None, "", TIGHT).await;
    let (status, error, _) = call(&m.proxy, "GET", "/slow", vec![]).await;
    assert_eq!(status, 504);
    assert!(error.unwrap().contains("timeout after 100ms"));
    // Other methods do not match the route: no timeout.
    let (status, _, _) = call(&m.proxy, "POST", "/slow", vec![]).await;
    assert_eq!(status, 200);
    m.proxy
        .wait_metric(&format!("route_response_total{{direction=\"outbound\",{DST},rt_route=\"slow\",status_code=\"504\",classification=\"failure\",grpc_status=\"\",error=\"timeout\"}} 1"))
        .await;
    // The attempt the timeout cut short is an attempt that failed: every attempt sent
    // ends in exactly one recorded outcome, so `mesh routes -o wide` cannot show the
    // route's actual success as 100%.
    let m = m
        .proxy
        .wait_metric(&format!("route_actual_response_total{{direction=\"outbound\",{DST},rt_route=\"slow\",status_code=\"504\",classification=\"failure\",grpc_status=\"\",error=\"timeout\"}} 1"))
        .await;
    let actual = |family: &str| -> u64 {
        m.lines()
            .filter(|l| l.starts_with(family) && l.contains("rt_route=\"slow\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(
        actual("route_actual_request_total{"),
        actual("route_actual_response_total{"),
        "every attempt has an outcome:\n{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_on_a_slow_route_gets_deadline_exceeded() {
    let web = app("web").await;
    let m = mesh(web.addr, None, "", TIGHT).await;
    let mut send = h2(m.proxy.outbound).await;
    let req = Request::get("http://web.default.svc.cluster.local/slow")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body(""))
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    // gRPC errors travel as HTTP 200 with the status in (trailers-only) headers.
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["grpc-status"], "4");
    assert!(rsp.headers()["grpc-message"]
        .to_str()
        .unwrap()
        .contains("timeout after 100ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_replay_limit_are_not_retried() {
    let web = app("web").await;
    let m = mesh(web.addr, None, "", TIGHT).await;
    // A small body is buffered for replay and still arrives whole.
    let (status, _, _) = call(&m.proxy, "POST", "/upload", vec![b'x'; 1000]).await;
    assert_eq!(status, 200);
    let before = web.hits.load(Relaxed);
    let (status, _, _) = call(&m.proxy, "POST", "/dead", vec![b'x'; 100 * 1024]).await;
    assert_eq!(status, 500);
    assert_eq!(web.hits.load(Relaxed) - before, 1, "sent once, not retried");
    m.proxy
        .wait_metric(&format!(
            "route_retryable_total{{{DST},rt_route=\"dead\",skipped=\"body_too_large\"}} 1"
        ))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_lands_within_bounds() {
    let web = app("web").await;
    let canary = app("canary").await;
    let split = "      dstOverrides:\n      - {authority: web.default.svc.cluster.local:80, weight: 900m}\n      - {authority: web-canary.default.svc.cluster.local:80, weight: 100m}\n";
    let m = mesh(web.addr, Some(canary.addr), split, TIGHT).await;
    let n = 1000;
    let mut to_canary = 0;
    for _ in 0..n {
        let (status, error, body) = call(&m.proxy, "GET", "/", vec![]).await;
        assert_eq!(status, 200, "{error:?}");
        if body == "canary" {
            to_canary += 1;
        }
    }
    // Binomial(1000, 0.1): mean 100, sd 9.5; ±5 sd.
    assert!(
        (52..=148).contains(&to_canary),
        "{to_canary} of {n} to the canary"
    );
}
