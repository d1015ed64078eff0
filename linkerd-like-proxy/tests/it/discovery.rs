//! Outbound discovery and load balancing, in process: a whole proxy in explicit mode
//! asking a fake destination service (tonic's generated server, driven by the test)
//! where names lead, and counting backends on loopback.

use crate::support::{
    controller::{FakeController, Model},
    *,
};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use mesh_api::{
    destination::{update::Update as Kind, AddSet, Endpoint, Update},
    net::TcpAddress,
};
use mesh_proxy::discover::Resolution;
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};

const WEB: &str = "web.test.svc.cluster.local:80";
const WEB_URL: &str = "http://web.test.svc.cluster.local/";
const CONTEXT: &str = r#"{"ns":"test","pod":"client-0"}"#;

/// A proxy that discovers through `controller`, with extra settings.
async fn meshed(controller: SocketAddr, extra: &[(&str, &str)]) -> TestProxy {
    let mut env = vec![
        ("MESH_PROXY_DESTINATION_ADDR", controller.to_string()),
        ("MESH_PROXY_DESTINATION_CONTEXT", CONTEXT.to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    proxy(&env).await
}

fn endpoints(backends: &[&Counted]) -> Model {
    let eps: Vec<(SocketAddr, Vec<(&str, &str)>)> = backends
        .iter()
        .map(|b| {
            let labels = vec![
                ("pod", b.name),
                ("deployment", "web"),
                ("serviceaccount", "web"),
            ];
            (b.addr, labels)
        })
        .collect();
    let eps: Vec<(SocketAddr, &[(&str, &str)])> =
        eps.iter().map(|(a, l)| (*a, l.as_slice())).collect();
    Model::endpoints(&[("namespace", "test"), ("service", "web")], &eps)
}

/// One request through the proxy on a fresh connection: its status and body.
/// A backend where DNS sends `localhost`: where a name discovery does not know goes.
async fn dns_backend() -> Counted {
    let local = tokio::net::lookup_host(("localhost", 0))
        .await
        .unwrap()
        .next()
        .unwrap();
    Counted::start_on(local, "dns", Duration::ZERO).await
}

async fn call(p: &TestProxy, url: &str) -> (StatusCode, String) {
    let rsp = h1(p.outbound).await.send_request(get(url)).await.unwrap();
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn resolution(p: &TestProxy, path: &str) -> Option<Resolution> {
    p.proxy
        .discovery()
        .expect("discovery is on")
        .resolution(path)
}

/// Waits until the proxy holds exactly these endpoints for `path`.
async fn wait_endpoints(p: &TestProxy, path: &str, want: &[&Counted]) {
    let mut want: Vec<SocketAddr> = want.iter().map(|b| b.addr).collect();
    want.sort();
    wait_until(
        &format!("the proxy resolves {path} to {want:?}"),
        || match resolution(p, path) {
            Some(Resolution::Endpoints(mut e)) => {
                e.sort();
                e == want
            }
            _ => false,
        },
    )
    .await;
}

/// Client workers sending requests one after another on keep-alive connections
/// until stopped, counting what they got.
struct Load {
    stop: Arc<AtomicBool>,
    done: Vec<Arc<AtomicUsize>>,
    failed: Arc<AtomicUsize>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    async fn start(p: &TestProxy, workers: usize, url: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let mut done = vec![];
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let n = Arc::new(AtomicUsize::new(0));
            done.push(n.clone());
            let (stop, failed, outbound) = (stop.clone(), failed.clone(), p.outbound);
            tasks.spawn(async move {
                let mut c = h1(outbound).await;
                while !stop.load(SeqCst) {
                    let ok = match c.send_request(get(url)).await {
                        Ok(rsp) => {
                            let status = rsp.status();
                            let body = rsp.into_body().collect().await;
                            status == StatusCode::OK && body.is_ok()
                        }
                        Err(_) => false,
                    };
                    if !ok {
                        failed.fetch_add(1, SeqCst);
                        c = h1(outbound).await;
                    }
                    n.fetch_add(1, SeqCst);
                }
            });
        }
        Self {
            stop,
            done,
            failed,
            tasks,
        }
    }

    fn total(&self) -> usize {
        self.done.iter().map(|n| n.load(SeqCst)).sum()
    }

    /// Waits until every worker has finished a request it began after this call:
    /// whatever each had picked before is done.
    async fn each_finishes_one_more(&self) {
        let before: Vec<usize> = self.done.iter().map(|n| n.load(SeqCst)).collect();
        // A request in flight now ends as `before + 1`; the one after it began later.
        wait_until("every worker finished a request begun later", || {
            self.done
                .iter()
                .zip(&before)
                .all(|(n, b)| n.load(SeqCst) >= b + 2)
        })
        .await;
    }

    async fn finish(mut self) -> usize {
        self.stop.store(true, SeqCst);
        while let Some(r) = self.tasks.join_next().await {
            r.unwrap();
        }
        self.failed.load(SeqCst)
    }
}

#[tokio::test]
async fn names_resolve_through_discovery_and_spread_over_endpoints() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let b: Vec<Counted> = futures_util::future::join_all(
        ["web-0", "web-1", "web-2"].map(|n| Counted::start(n, Duration::from_millis(2))),
    )
    .await;
    fake.set(WEB, endpoints(&[&b[0], &b[1], &b[2]]));
    let p = meshed(ctl.addr, &[]).await;

    // Concurrent clients: each request goes to an endpoint, never to DNS.
    let load = Load::start(&p, 8, WEB_URL).await;
    wait_until("300 requests are done", || load.total() >= 300).await;
    assert_eq!(load.finish().await, 0, "no request failed");
    let total: usize = b.iter().map(Counted::hits).sum();
    for backend in &b {
        assert!(
            backend.hits() * 10 >= total,
            "{} got {} of {total}",
            backend.name,
            backend.hits()
        );
    }
    // One stream for the name, with the authority's port and the context token.
    assert_eq!(fake.gets(), [(WEB.to_string(), CONTEXT.to_string())]);
}

#[tokio::test]
async fn outbound_metrics_carry_dst_labels() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let web = Counted::start("web-0", Duration::ZERO).await;
    fake.set(
        WEB,
        Model::endpoints(
            &[("namespace", "test"), ("service", "web")],
            &[(
                web.addr,
                &[
                    ("pod", "web-0"),
                    ("deployment", "web"),
                    ("serviceaccount", "web-sa"),
                    ("app.kubernetes.io/name", "web"),
                ],
            )],
        ),
    );
    let p = meshed(ctl.addr, &[]).await;
    assert_eq!(call(&p, WEB_URL).await, (StatusCode::OK, "web-0".into()));

    let dst = r#"dst_app_kubernetes_io_name="web",dst_deployment="web",dst_namespace="test",dst_pod="web-0",dst_service="web",dst_serviceaccount="web-sa""#;
    let series = format!(
        r#"direction="outbound",authority="{WEB}",target_addr="{}",tls="false",{dst}"#,
        web.addr
    );
    let m = p
        .wait_metric(&format!(
            "response_total{{{series},status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} 1\n"
        ))
        .await;
    assert!(m.contains(&format!("request_total{{{series}}} 1\n")), "{m}");
    assert!(
        m.contains(&format!(
            "response_latency_ms_count{{{series},status_code=\"200\"}} 1\n"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            r#"tcp_open_total{{direction="outbound",peer="dst",target_addr="{}",tls="false",{dst}}} 1"#,
            web.addr
        )),
        "{m}"
    );
    assert!(m.contains("outbound_discovery_destinations 1\n"), "{m}");
    assert!(m.contains("outbound_discovery_endpoints 1\n"), "{m}");
}

#[tokio::test]
async fn endpoints_come_and_go_under_load_without_failures() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let a = Counted::start("web-a", Duration::from_millis(1)).await;
    let b = Counted::start("web-b", Duration::from_millis(1)).await;
    let c = Counted::start("web-c", Duration::from_millis(1)).await;
    fake.set(WEB, endpoints(&[&a, &b]));
    let p = meshed(ctl.addr, &[]).await;
    let load = Load::start(&p, 4, WEB_URL).await;
    wait_until("both endpoints serve", || a.hits() > 0 && b.hits() > 0).await;

    // A new endpoint takes traffic at once.
    fake.set(WEB, endpoints(&[&a, &b, &c]));
    wait_until("the new endpoint serves", || c.hits() > 0).await;

    // Removal: first from the API; the backend stops only once the proxy has seen
    // the removal and every request that could have picked it has finished.
    fake.set(WEB, endpoints(&[&b, &c]));
    wait_endpoints(&p, WEB, &[&b, &c]).await;
    load.each_finishes_one_more().await;
    a.stop();
    let a_hits = a.hits();
    let before = load.total();
    wait_until("200 more requests are done", || {
        load.total() >= before + 200
    })
    .await;
    assert_eq!(a.hits(), a_hits, "a removed endpoint gets no new requests");

    // Scale to one and back.
    fake.set(WEB, endpoints(&[&c]));
    wait_endpoints(&p, WEB, &[&c]).await;
    load.each_finishes_one_more().await;
    b.stop();
    let before = load.total();
    wait_until("100 more requests are done", || {
        load.total() >= before + 100
    })
    .await;
    let d = Counted::start("web-d", Duration::from_millis(1)).await;
    fake.set(WEB, endpoints(&[&c, &d]));
    wait_until("the new endpoint serves", || d.hits() > 0).await;

    assert_eq!(load.finish().await, 0, "no request failed");
}

#[tokio::test]
async fn unknown_names_fall_back_to_dns_and_known_empty_ones_fail() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let dns = dns_backend().await;
    let web = Counted::start("web-0", Duration::ZERO).await;
    let p = meshed(ctl.addr, &[]).await;
    let name = format!("localhost:{}", dns.addr.port());
    let url = format!("http://{name}/");

    // Unknown to the destination service (exists: false): DNS, as without discovery.
    assert_eq!(call(&p, &url).await, (StatusCode::OK, "dns".into()));
    assert_eq!(resolution(&p, &name), Some(Resolution::Unknown));

    // The name becomes a service: its endpoints, live on the same stream.
    fake.set(&name, endpoints(&[&web]));
    wait_endpoints(&p, &name, &[&web]).await;
    assert_eq!(call(&p, &url).await, (StatusCode::OK, "web-0".into()));

    // Known, with no endpoints (exists: true): 503, not DNS.
    fake.set(&name, Model::endpoints(&[("service", "web")], &[]));
    wait_until("the proxy sees no endpoints", || {
        resolution(&p, &name) == Some(Resolution::Endpoints(vec![]))
    })
    .await;
    let rsp = h1(p.outbound).await.send_request(get(&url)).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        rsp.headers()["mesh-proxy-error"],
        format!("no endpoints for {name}").as_str()
    );
    let req = Request::post(&url)
        .header("content-type", "application/grpc")
        .body(body(""))
        .unwrap();
    let rsp = h2(p.outbound).await.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["grpc-status"], "14");
    let m = p
        .wait_metric(
            r#"status_code="503",classification="failure",grpc_status="",error="no-endpoints""#,
        )
        .await;
    assert!(
        m.contains(&format!(
            r#"request_total{{direction="outbound",authority="{name}",target_addr="0.0.0.0:{}",tls="false"}}"#,
            dns.addr.port()
        )),
        "{m}"
    );

    // The service is deleted (exists: false): back to DNS.
    fake.set(&name, Model::Unknown);
    wait_until("the proxy forgets the endpoints", || {
        resolution(&p, &name) == Some(Resolution::Unknown)
    })
    .await;
    assert_eq!(call(&p, &url).await, (StatusCode::OK, "dns".into()));
    assert_eq!(dns.hits(), 2);
    assert_eq!(fake.gets_for(&name), 1, "one stream all along");
}

#[tokio::test]
async fn a_silent_controller_delays_only_the_first_request() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let dns = dns_backend().await;
    let name = format!("localhost:{}", dns.addr.port());
    fake.set(&name, Model::Silent);
    let p = meshed(ctl.addr, &[("MESH_PROXY_DISCOVERY_TIMEOUT", "300ms")]).await;
    let url = format!("http://{name}/");

    let start = tokio::time::Instant::now();
    assert_eq!(call(&p, &url).await, (StatusCode::OK, "dns".into()));
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    // The timeout is spent: later requests do not wait.
    let start = tokio::time::Instant::now();
    assert_eq!(call(&p, &url).await, (StatusCode::OK, "dns".into()));
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(resolution(&p, &name), Some(Resolution::Pending));
}

#[tokio::test]
async fn a_lost_controller_leaves_the_last_endpoints_and_a_new_one_is_followed() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let port = ctl.addr;
    let a = Counted::start("web-a", Duration::ZERO).await;
    let b = Counted::start("web-b", Duration::ZERO).await;
    let c = Counted::start("web-c", Duration::ZERO).await;
    fake.set(WEB, endpoints(&[&a, &b]));
    let p = meshed(ctl.addr, &[]).await;
    assert_eq!(call(&p, WEB_URL).await.0, StatusCode::OK);
    assert_eq!(fake.gets_for(WEB), 1);

    // The controller dies: the proxy keeps serving with what it knew.
    ctl.kill();
    fake.wait("the stream closed", |f| f.open_streams(WEB) == 0)
        .await;
    let load = Load::start(&p, 2, WEB_URL).await;
    let before = (a.hits(), b.hits());
    wait_until("60 requests are done", || load.total() >= 60).await;
    assert!(a.hits() > before.0 && b.hits() > before.1);
    wait_endpoints(&p, WEB, &[&a, &b]).await;

    // A new controller on the same address, which knows of other endpoints: the
    // proxy re-subscribes and its first message replaces what the proxy had.
    fake.set(WEB, endpoints(&[&b, &c]));
    let _ctl = fake.serve(port).await;
    fake.wait("the proxy re-subscribe", |f| f.gets_for(WEB) == 2)
        .await;
    wait_endpoints(&p, WEB, &[&b, &c]).await;
    load.each_finishes_one_more().await;
    let a_hits = a.hits();
    let before = load.total();
    wait_until("60 more requests are done", || load.total() >= before + 60).await;
    assert_eq!(a.hits(), a_hits, "the replaced endpoint gets nothing new");
    assert!(c.hits() > 0);
    assert_eq!(load.finish().await, 0, "no request failed");
}

#[tokio::test]
async fn idle_destinations_are_dropped_with_their_streams() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let web = Counted::start("web-0", Duration::ZERO).await;
    fake.set(WEB, endpoints(&[&web]));
    let p = meshed(ctl.addr, &[("MESH_PROXY_DISCOVERY_IDLE_TIMEOUT", "200ms")]).await;
    assert_eq!(call(&p, WEB_URL).await.0, StatusCode::OK);
    assert_eq!(fake.open_streams(WEB), 1);

    // Nothing uses it: the proxy forgets it and closes the stream.
    fake.wait("the idle stream closed", |f| f.open_streams(WEB) == 0)
        .await;
    assert_eq!(resolution(&p, WEB), None);
    p.wait_metric("outbound_discovery_destinations 0\n").await;
    p.wait_metric("outbound_discovery_endpoints 0\n").await;

    // Using it again subscribes again.
    assert_eq!(call(&p, WEB_URL).await.0, StatusCode::OK);
    assert_eq!(fake.gets_for(WEB), 2);
    assert_eq!(web.hits(), 2);
}

#[tokio::test]
async fn a_busy_destination_is_not_idle() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let web = Counted::start("web-0", Duration::ZERO).await;
    fake.set(WEB, endpoints(&[&web]));
    let p = meshed(ctl.addr, &[("MESH_PROXY_DISCOVERY_IDLE_TIMEOUT", "100ms")]).await;
    let load = Load::start(&p, 1, WEB_URL).await;
    wait_until("a request is done", || load.total() > 0).await;
    // Several idle timeouts of steady use keep the one stream: sampled over the
    // whole period, since that is the property.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(fake.open_streams(WEB), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fake.gets_for(WEB), 1);
    assert!(load.total() > 10);
    assert_eq!(load.finish().await, 0);
}

#[tokio::test]
async fn invalid_updates_are_skipped() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let web = Counted::start("web-0", Duration::ZERO).await;
    fake.set(WEB, endpoints(&[&web]));
    let p = meshed(ctl.addr, &[]).await;
    assert_eq!(call(&p, WEB_URL).await, (StatusCode::OK, "web-0".into()));

    let other = Counted::start("web-1", Duration::ZERO).await;
    let bad = |addr: Option<TcpAddress>| Endpoint {
        addr,
        ..Default::default()
    };
    fake.inject(WEB, Update { update: None });
    fake.inject(
        WEB,
        Update {
            update: Some(Kind::Add(AddSet {
                endpoints: vec![
                    bad(None),
                    bad(Some(TcpAddress { ip: None, port: 80 })),
                    bad(Some(TcpAddress {
                        port: 1 << 20,
                        ..TcpAddress::from(other.addr)
                    })),
                    bad(Some(TcpAddress::from(other.addr))),
                ],
                metric_labels: Default::default(),
            })),
        },
    );
    wait_endpoints(&p, WEB, &[&web, &other]).await;
    // The valid endpoint takes its share of concurrent requests.
    let load = Load::start(&p, 4, WEB_URL).await;
    wait_until("the valid endpoint serves", || other.hits() > 0).await;
    assert_eq!(load.finish().await, 0);
    assert_eq!(fake.gets_for(WEB), 1, "the stream was not dropped");
}

#[tokio::test]
async fn a_slow_endpoint_gets_little_traffic() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let fast0 = Counted::start("fast-0", Duration::from_millis(5)).await;
    let fast1 = Counted::start("fast-1", Duration::from_millis(5)).await;
    let slow = Counted::start("slow", Duration::from_millis(50)).await;
    fake.set(WEB, endpoints(&[&fast0, &fast1, &slow]));
    let p = meshed(ctl.addr, &[]).await;
    let load = Load::start(&p, 4, WEB_URL).await;
    wait_until("600 requests are done", || load.total() >= 600).await;
    assert_eq!(load.finish().await, 0);
    let total = fast0.hits() + fast1.hits() + slow.hits();
    // Typically about 1% (it answers once, then is avoided until its estimate
    // fades), but real timers on a loaded machine blur a 10x difference (eight of
    // these suites at once on two cores gave up to 14%), so the bound here is
    // generous: well under an even share (a third). `balance::tests` checks the 10%
    // bound the issue asks for on simulated latencies, free of timer noise.
    assert!(
        slow.hits() * 4 < total,
        "slow got {} of {total}",
        slow.hits()
    );
}

#[tokio::test]
async fn a_refused_destination_goes_where_the_client_sent_it() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let dns = dns_backend().await;
    let name = format!("localhost:{}", dns.addr.port());
    // As the controller refuses a path it cannot parse (InvalidArgument).
    fake.refuse(&name);
    let p = meshed(ctl.addr, &[]).await;
    let url = format!("http://{name}/");
    assert_eq!(call(&p, &url).await, (StatusCode::OK, "dns".into()));
    assert_eq!(resolution(&p, &name), Some(Resolution::Unknown));
    assert_eq!(call(&p, &url).await, (StatusCode::OK, "dns".into()));
    assert_eq!(fake.gets_for(&name), 1);
}

#[tokio::test]
async fn a_request_to_an_unreachable_endpoint_is_retried_on_another() {
    let fake = FakeController::new();
    let ctl = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let live = Counted::start("live", Duration::ZERO).await;
    // Nothing listens here: connections are refused.
    let (dead, _reserved) = refusing();
    let both = Model::endpoints(
        &[("namespace", "test")],
        &[(dead, &[("pod", "dead")]), (live.addr, &[("pod", "live")])],
    );
    // Each name is a fresh destination whose first pick is a coin toss between the
    // two: over 20 of them, the dead endpoint is picked first at least once (but for
    // a chance of one in a million).
    let names: Vec<String> = (0..20)
        .map(|i| format!("web{i}.test.svc.cluster.local"))
        .collect();
    for n in &names {
        fake.set(&format!("{n}:80"), both.clone());
    }
    let p = meshed(ctl.addr, &[]).await;
    for n in &names {
        assert_eq!(
            call(&p, &format!("http://{n}/")).await,
            (StatusCode::OK, "live".into())
        );
    }
    // Some of those were first picked for the dead endpoint, and still succeeded: the
    // balancer leases a connection before anything is sent, so a refused one sent
    // them elsewhere, and each is counted under the endpoint that served it, none
    // under the dead one.
    let dead_addr = format!("target_addr=\"{dead}\"");
    let live_addr = format!("target_addr=\"{}\"", live.addr);
    wait_until("every request is counted under the live endpoint", || {
        let served: u64 = p
            .metrics()
            .lines()
            .filter(|l| {
                l.starts_with("response_total{")
                    && l.contains(&live_addr)
                    && l.contains(r#"status_code="200""#)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        served == names.len() as u64
    })
    .await;
    assert!(
        !p.metrics()
            .lines()
            .any(|l| l.starts_with("response_total{") && l.contains(&dead_addr)),
        "nothing was served by the dead endpoint"
    );

    // With no other endpoint, the failure stands: 502.
    fake.set(
        "only-dead.test.svc.cluster.local:80",
        Model::endpoints(&[], &[(dead, &[])]),
    );
    let rsp = h1(p.outbound)
        .await
        .send_request(get("http://only-dead.test.svc.cluster.local/"))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert!(rsp.headers()["mesh-proxy-error"]
        .to_str()
        .unwrap()
        .contains(&format!("connect to {dead} failed")));
}
