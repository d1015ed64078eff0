//! The metrics API end to end, in process: the controller (file backend) scrapes two
//! fake proxies' admin servers, whose canned pages change between scrapes, and its
//! JSON answers are what the pages' differences say, exactly.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::TokioIo;
use mesh_controller::{Config, Running};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};
use tokio::{net::TcpListener, time::Instant};

const DEADLINE: Duration = Duration::from_secs(15);
const WEB_ID: &str = "web.demo.serviceaccount.identity.mesh.cluster.local";
const VOTING_ID: &str = "voting.demo.serviceaccount.identity.mesh.cluster.local";

/// A proxy's admin server that answers its pages in turn, then the last one forever.
struct FakeProxy {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl FakeProxy {
    async fn start(pages: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let pages = Arc::new(pages);
        let counter = Arc::clone(&hits);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let pages = Arc::clone(&pages);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let i = counter.fetch_add(1, SeqCst).min(pages.len() - 1);
                        let page = pages[i].clone();
                        async move {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(page))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(SeqCst)
    }
}

fn web_page(success: u64, failure: u64, slow: u64) -> String {
    let dst = format!(
        "authority=\"voting.demo.svc.cluster.local:80\",target_addr=\"127.0.0.1:7001\",tls=\"true\",server_id=\"{VOTING_ID}\",dst_namespace=\"demo\",dst_service=\"voting\",dst_deployment=\"voting\",dst_pod=\"voting-0\",dst_serviceaccount=\"voting\""
    );
    let mut page = format!(
        "# TYPE response_total counter\n\
         response_total{{direction=\"outbound\",{dst},status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} {success}\n\
         response_total{{direction=\"outbound\",{dst},status_code=\"500\",classification=\"failure\",grpc_status=\"\",error=\"\"}} {failure}\n\
         # TYPE response_latency_ms histogram\n"
    );
    // Every response took 30–40 ms but `slow` of them, which took 400–500 ms.
    let all = success + failure;
    for le in ["1", "2", "3", "4", "5", "10", "20", "30"] {
        page +=
            &format!("response_latency_ms_bucket{{direction=\"outbound\",{dst},le=\"{le}\"}} 0\n");
    }
    for le in ["40", "50", "100", "200", "300", "400"] {
        page += &format!(
            "response_latency_ms_bucket{{direction=\"outbound\",{dst},le=\"{le}\"}} {}\n",
            all - slow
        );
    }
    for le in ["500", "1000", "+Inf"] {
        page += &format!(
            "response_latency_ms_bucket{{direction=\"outbound\",{dst},le=\"{le}\"}} {all}\n"
        );
    }
    page
}

fn voting_page(success: u64, failure: u64, open: u64) -> String {
    format!(
        "response_total{{direction=\"inbound\",target_addr=\"127.0.0.1:7001\",tls=\"true\",client_id=\"{WEB_ID}\",status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} {success}\n\
         response_total{{direction=\"inbound\",target_addr=\"127.0.0.1:7001\",tls=\"true\",client_id=\"{WEB_ID}\",status_code=\"500\",classification=\"failure\",grpc_status=\"\",error=\"\"}} {failure}\n\
         tcp_open_connections{{direction=\"inbound\",peer=\"src\",target_addr=\"127.0.0.1:7001\",tls=\"true\",client_id=\"{WEB_ID}\"}} {open}\n"
    )
}

fn discovery(web_admin: SocketAddr, voting_admin: SocketAddr) -> String {
    format!(
        "services:\n\
         - name: web\n  namespace: demo\n  endpoints:\n\
         \x20 - address: 127.0.0.1:7000\n    labels: {{pod: web-0, deployment: web}}\n    identity: {WEB_ID}\n    admin: {web_admin}\n\
         - name: voting\n  namespace: demo\n  endpoints:\n\
         \x20 - address: 127.0.0.1:7001\n    labels: {{pod: voting-0, deployment: voting}}\n    identity: {VOTING_ID}\n    admin: {voting_admin}\n\
         \x20 - address: 127.0.0.1:7002\n    labels: {{pod: voting-1, deployment: voting}}\n"
    )
}

async fn get(addr: SocketAddr, path: &str) -> (http::StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn get_json(running: &Running, path: &str) -> serde_json::Value {
    let (status, body) = get(running.api_addr, path).await;
    assert_eq!(status, http::StatusCode::OK, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stat_and_edges_agree_with_the_proxies_counters() {
    // web-0 sent 120 responses to voting between its first two scrapes (90 succeeded,
    // 12 of the 120 were slow); voting-0 served 100 (80 succeeded) and holds 3
    // connections open. Later scrapes repeat the second page: nothing more happened.
    let web = FakeProxy::start(vec![web_page(10, 5, 0), web_page(100, 35, 12)]).await;
    let voting = FakeProxy::start(vec![voting_page(0, 0, 1), voting_page(80, 20, 3)]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.yaml");
    std::fs::write(&file, discovery(web.addr, voting.addr)).unwrap();
    let mut config = Config::local(file);
    config.scrape.interval = Duration::from_millis(100);
    config.scrape.timeout = Duration::from_millis(1000);
    let running = config.build().await.unwrap();
    wait_until("two scrapes of each proxy", || {
        web.hits() >= 2 && voting.hits() >= 2
    })
    .await;
    // The second scrape is recorded once its page is read: wait for the third.
    wait_until("three scrapes of each proxy", || {
        web.hits() >= 3 && voting.hits() >= 3
    })
    .await;

    let stat = get_json(
        &running,
        "/api/stat?resource=deploy&namespace=demo&window=1m",
    )
    .await;
    let rows = stat["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{stat:#}");
    let voting_row = rows
        .iter()
        .find(|r| r["resource"]["name"] == "voting")
        .unwrap();
    assert_eq!(voting_row["resource"]["type"], "deployment");
    assert_eq!(
        voting_row["pods"],
        serde_json::json!({"meshed": 1, "total": 2})
    );
    assert_eq!(
        voting_row["responses"],
        serde_json::json!({"success": 80, "failure": 20})
    );
    assert_eq!(voting_row["success_rate"], 0.8);
    assert_eq!(voting_row["tcp"]["open_connections"], 3);
    let seconds = voting_row["seconds"].as_f64().unwrap();
    let rps = voting_row["rps"].as_f64().unwrap();
    assert!((rps - 100.0 / seconds).abs() < 1e-9, "{voting_row:#}");

    // web's view of voting: its outbound side, latency from its histogram.
    let to = get_json(
        &running,
        "/api/stat?resource=deploy/web&namespace=demo&to=deploy/voting&window=1m",
    )
    .await;
    let web_row = &to["rows"][0];
    assert_eq!(
        web_row["responses"],
        serde_json::json!({"success": 90, "failure": 30})
    );
    assert_eq!(web_row["success_rate"], 0.75);
    let latency = &web_row["latency_ms"];
    let p50 = latency["p50"].as_f64().unwrap();
    assert!(p50 > 30.0 && p50 <= 40.0, "{latency}");
    // 12 of 120 slow: the 95th and 99th percentiles are among them.
    for q in ["p95", "p99"] {
        let v = latency[q].as_f64().unwrap();
        assert!(v > 400.0 && v <= 500.0, "{latency}");
    }

    // The edge, with both identities.
    let edges = get_json(&running, "/api/edges?resource=deploy&namespace=demo").await;
    assert_eq!(
        edges["edges"],
        serde_json::json!([{
            "src": {"type": "deployment", "namespace": "demo", "name": "web"},
            "dst": {"type": "deployment", "namespace": "demo", "name": "voting"},
            "client_id": WEB_ID,
            "server_id": VOTING_ID,
            "secured": true,
            "responses": {"success": 90, "failure": 30},
            "success_rate": 0.75,
            "rps": edges["edges"][0]["rps"],
            "tcp": edges["edges"][0]["tcp"],
            "unauthorized_rps": 0.0,
        }]),
        "{edges:#}"
    );

    // The namespace page's answer: the same edge between workloads, and each kind's
    // rows as stat has them.
    let ns = get_json(&running, "/api/namespace?namespace=demo").await;
    let ends = |e: &serde_json::Value| {
        serde_json::json!([
            e["src"],
            e["dst"],
            e["client_id"],
            e["server_id"],
            e["secured"],
            e["responses"]
        ])
    };
    let ns_edges: Vec<_> = ns["edges"].as_array().unwrap().iter().map(ends).collect();
    assert_eq!(ns_edges, vec![ends(&edges["edges"][0])], "{ns:#}");
    for (kind, short) in [("deployment", "deploy"), ("pod", "po"), ("service", "svc")] {
        let stat = get_json(
            &running,
            &format!("/api/stat?resource={short}&namespace=demo"),
        )
        .await;
        let names = |rows: &serde_json::Value| -> Vec<serde_json::Value> {
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| r["resource"].clone())
                .collect()
        };
        assert_eq!(
            names(&ns["stat"][kind]),
            names(&stat["rows"]),
            "{kind}: {ns:#}"
        );
    }

    // The aggregates in Prometheus text.
    let (status, text) = get(running.api_addr, "/api/metrics").await;
    assert_eq!(status, http::StatusCode::OK);
    let samples = mesh_api::prom::parse(&text).expect("Prometheus text");
    let voting_success: f64 = samples
        .iter()
        .filter(|s| {
            s.name == "response_total"
                && s.label("deployment") == Some("voting")
                && s.label("classification") == Some("success")
        })
        .map(|s| s.value)
        .sum();
    assert_eq!(voting_success, 80.0);

    // The scraper's own counters, on the admin server.
    let (_, text) = get(running.admin_addr, "/metrics").await;
    let samples = mesh_api::prom::parse(&text).expect("Prometheus text");
    let value = |name: &str, result: Option<&str>| {
        samples
            .iter()
            .find(|s| s.name == name && s.label("result") == result)
            .map(|s| s.value)
    };
    assert!(
        value("metrics_api_scrapes_total", Some("ok")) >= Some(4.0),
        "{text}"
    );
    assert_eq!(value("metrics_api_pods", None), Some(2.0));
    assert_eq!(value("metrics_api_overflow_samples", None), Some(0.0));

    // A bad query is a 400 that says why.
    let (status, body) = get(running.api_addr, "/api/stat?resource=deploy&window=forever").await;
    assert_eq!(status, http::StatusCode::BAD_REQUEST);
    assert!(body.contains("window"), "{body}");

    running.shutdown();
    running.wait().await.unwrap();
}

/// `/api/diagnostics/proxy-metrics`: a pod's proxy's page fetched when asked and passed
/// on as it came; a 404 for a pod the index does not have or that has no proxy, a 502
/// naming the admin address when the proxy refuses or does not answer in the scrape
/// timeout.
#[tokio::test]
async fn proxy_metrics_passes_a_proxys_page_on() {
    let web = FakeProxy::start(vec![web_page(7, 1, 0)]).await;
    // voting-0's proxy accepts connections and never answers; voting-2's is gone.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n\
             - name: web\n  namespace: demo\n  endpoints:\n\
             \x20 - address: 127.0.0.1:7000\n    labels: {{pod: web-0, deployment: web}}\n    identity: {WEB_ID}\n    admin: {}\n\
             - name: voting\n  namespace: demo\n  endpoints:\n\
             \x20 - address: 127.0.0.1:7001\n    labels: {{pod: voting-0, deployment: voting}}\n    identity: {VOTING_ID}\n    admin: {silent_addr}\n\
             \x20 - address: 127.0.0.1:7002\n    labels: {{pod: voting-1, deployment: voting}}\n\
             \x20 - address: 127.0.0.1:7003\n    labels: {{pod: voting-2, deployment: voting}}\n    identity: {VOTING_ID}\n    admin: {gone}\n",
            web.addr
        ),
    )
    .unwrap();
    let mut config = Config::local(file);
    config.scrape.timeout = Duration::from_millis(300);
    let running = config.build().await.unwrap();
    wait_until("the file loaded", || running.index.is_ready()).await;
    let api = running.api_addr;

    let (status, body) = get(
        api,
        "/api/diagnostics/proxy-metrics?namespace=demo&pod=web-0",
    )
    .await;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    assert_eq!(body, web_page(7, 1, 0));

    let error = |body: &str| -> String {
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        doc["error"].as_str().unwrap().to_string()
    };
    let (status, body) = get(
        api,
        "/api/diagnostics/proxy-metrics?namespace=demo&pod=voting-0",
    )
    .await;
    assert_eq!(status, http::StatusCode::BAD_GATEWAY, "{body}");
    let message = error(&body);
    assert!(
        message.contains(&silent_addr.to_string())
            && message.contains("did not answer within 300ms"),
        "{message}"
    );
    let (status, body) = get(
        api,
        "/api/diagnostics/proxy-metrics?namespace=demo&pod=voting-2",
    )
    .await;
    assert_eq!(status, http::StatusCode::BAD_GATEWAY, "{body}");
    let message = error(&body);
    assert!(
        message.contains(&format!(
            "pod demo/voting-2 at {gone} did not answer: connect"
        )),
        "{message}"
    );

    for (query, status, why) in [
        (
            "namespace=demo&pod=voting-1",
            404,
            "pod demo/voting-1 is not meshed",
        ),
        (
            "namespace=demo&pod=nope",
            404,
            "no pod nope in namespace demo",
        ),
        (
            "namespace=shop&pod=web-0",
            404,
            "no pod web-0 in namespace shop",
        ),
        ("namespace=demo", 400, "parameter pod is required"),
        ("pod=web-0", 400, "parameter namespace is required"),
        (
            "namespace=demo&pod=web-0&window=1m",
            400,
            "unknown parameter window",
        ),
    ] {
        let (got, body) = get(api, &format!("/api/diagnostics/proxy-metrics?{query}")).await;
        assert_eq!(got.as_u16(), status, "{query}: {body}");
        let message = error(&body);
        assert!(message.contains(why), "{query}: {message}");
    }
    drop(silent);
}
