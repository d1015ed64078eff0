//! Process-level tests of `mesh routes`: the real binary against a tiny metrics server
//! that answers the first scrape with one canned page and every later one with another,
//! so the deltas, and therefore the numbers, are known exactly.
//!
//! Rates divide by the measured time between the scrapes, which no test controls: the
//! table test allows for scheduling jitter, and the JSON test checks the rate against the
//! elapsed time the command reports, exactly.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Output},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

const EX_USAGE: i32 = 64;
const WEB: &str = "web.demo.svc.cluster.local:80";

/// Linkerd's latency buckets, as the proxy writes them.
const BUCKETS: [&str; 19] = [
    "1", "2", "3", "4", "5", "10", "20", "30", "40", "50", "100", "200", "300", "400", "500",
    "1000", "2000", "5000", "+Inf",
];

/// A route's series: responses (success, failure), attempts (success, failure) and the
/// cumulative count per bucket of `BUCKETS`.
fn route(rt: Option<&str>, ok: u32, failed: u32, actual: (u32, u32), buckets: [u32; 19]) -> String {
    let rt = rt.map_or(String::new(), |r| format!(",rt_route=\"{r}\""));
    let base = format!("direction=\"outbound\",dst=\"{WEB}\"{rt}");
    let mut out = format!("route_request_total{{{base}}} {}\n", ok + failed);
    for (prefix, (s, f)) in [("route_", (ok, failed)), ("route_actual_", actual)] {
        out += &format!(
            "{prefix}response_total{{{base},status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} {s}\n\
             {prefix}response_total{{{base},status_code=\"500\",classification=\"failure\",grpc_status=\"\",error=\"\"}} {f}\n"
        );
    }
    for (le, n) in BUCKETS.iter().zip(buckets) {
        out += &format!(
            "route_response_latency_ms_bucket{{{base},status_code=\"200\",le=\"{le}\"}} {n}\n"
        );
    }
    out
}

/// Another service's route, which must not show.
fn emoji(n: u32) -> String {
    format!(
        "route_response_total{{direction=\"outbound\",dst=\"emoji.demo.svc.cluster.local:80\",rt_route=\"ListAll\",status_code=\"200\",classification=\"success\",grpc_status=\"0\",error=\"\"}} {n}\n"
    )
}

/// The first scrape.
fn before() -> String {
    let mut b = [5u32; 19];
    b[..2].copy_from_slice(&[0, 0]);
    format!(
        "# HELP route_request_total Total count of HTTP requests.\n# TYPE route_request_total counter\n{}{}{}",
        route(Some("GET /api/list"), 100, 10, (100, 20), b),
        route(None, 7, 0, (7, 0), [7; 19]),
        emoji(1),
    )
}

/// The second: `GET /api/list` answered 30 more requests, 3 failed, in 36 attempts (9
/// failed); the default route saw nothing. Of the 30: 10 took 2-3 ms, 15 3-4 ms, 3 4-5 ms,
/// 2 5-10 ms.
fn after() -> String {
    let delta = [
        0, 0, 10, 25, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30,
    ];
    let mut b = [0u32; 19];
    for (i, d) in delta.iter().enumerate() {
        b[i] = if i < 2 { 0 } else { 5 } + d;
    }
    format!(
        "{}{}{}",
        route(Some("GET /api/list"), 127, 13, (127, 29), b),
        route(None, 7, 0, (7, 0), [7; 19]),
        emoji(50),
    )
}

/// Serves `pages[n]` to the n-th scrape (the last page to any later one); its address.
fn metrics_server(pages: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let scrapes = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let n = scrapes.fetch_add(1, Ordering::SeqCst);
            let page = pages[n.min(pages.len() - 1)].clone();
            std::thread::spawn(move || answer(conn, &page));
        }
    });
    format!("http://{addr}/metrics")
}

fn answer(mut conn: TcpStream, page: &str) {
    let mut request = Vec::new();
    let mut buf = [0; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
        page.len()
    );
}

fn mesh(args: &[&str], tmpdir: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh"));
    cmd.args(args);
    if let Some(dir) = tmpdir {
        cmd.env("TMPDIR", dir);
    }
    cmd.output().expect("mesh runs")
}

/// `mesh routes TARGET -n demo --metrics URL --window WINDOW [EXTRA...]` against a
/// metrics server serving `before()` then `after()`.
fn routes_over_two_scrapes(target: &str, window: &str, extra: &[&str]) -> Output {
    let url = metrics_server(vec![before(), after()]);
    let mut args = vec![
        "routes",
        target,
        "-n",
        "demo",
        "--metrics",
        &url,
        "--window",
        window,
    ];
    args.extend_from_slice(extra);
    mesh(&args, None)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn table_from_two_scrapes() {
    let out = routes_over_two_scrapes("svc/web", "1s", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        lines[0],
        [
            "ROUTE",
            "SERVICE",
            "SUCCESS",
            "RPS",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99"
        ],
        "{text}"
    );
    assert_eq!(lines.len(), 3, "{text}");
    let list = &lines[1];
    assert_eq!(list[..3], ["GET /api/list", "web", "90.00%"], "{text}");
    // 30 responses over the measured ~1 s between scrapes.
    let rps: f64 = list[3]
        .strip_suffix("rps")
        .expect("rps")
        .parse()
        .expect("number");
    assert!((25.0..=31.0).contains(&rps), "{text}");
    // p50: rank 15 of 30, 5 of 15 into (3, 4] = 3.33; p95: rank 28.5, 0.5 of 2 into
    // (5, 10] = 6.25; p99: rank 29.7 = 9.25.
    assert_eq!(list[4..], ["3ms", "6ms", "9ms"], "{text}");
    assert_eq!(
        lines[2],
        ["[DEFAULT]", "web", "-", "-", "-", "-", "-"],
        "{text}"
    );
}

#[test]
fn json_and_wide_report_attempts_too() {
    let out = routes_over_two_scrapes("service/web", "200ms", &["-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let elapsed = doc["proxies"][0]["elapsed_seconds"]
        .as_f64()
        .expect("elapsed");
    assert!(elapsed > 0.1, "{doc}");
    let routes = doc["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 2, "{doc}");
    let list = &routes[0];
    assert_eq!(list["route"], "GET /api/list");
    assert_eq!(list["service"], "web");
    assert_eq!(list["effective_success"], 0.9);
    assert!((list["effective_rps"].as_f64().expect("rps") * elapsed - 30.0).abs() < 1e-9);
    assert_eq!(list["actual_success"], 0.75);
    assert!((list["actual_rps"].as_f64().expect("rps") * elapsed - 36.0).abs() < 1e-9);
    let close = |key: &str, want: f64| {
        let got = list[key].as_f64().expect(key);
        assert!((got - want).abs() < 1e-9, "{key}: {got} != {want}");
    };
    close("latency_ms_p50", 10.0 / 3.0);
    close("latency_ms_p95", 6.25);
    close("latency_ms_p99", 9.25);
    assert_eq!(routes[1]["route"], "[DEFAULT]");
    assert_eq!(routes[1]["effective_success"], serde_json::Value::Null);
    assert_eq!(routes[1]["latency_ms_p50"], serde_json::Value::Null);

    let out = routes_over_two_scrapes("deploy/web", "200ms", &["-o", "wide"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("ROUTE           SERVICE   EFFECTIVE_SUCCESS   EFFECTIVE_RPS   ACTUAL_SUCCESS   ACTUAL_RPS   LATENCY_P50"), "{text}");
    assert!(text.contains("90.00%") && text.contains("75.00%"), "{text}");
}

#[test]
fn finds_a_running_demo() {
    let url = metrics_server(vec![before(), after()]);
    let tmp = tempfile::tempdir().expect("tempdir");
    // This test's own pid is alive; a pid that cannot exist is a demo that is gone.
    for (pid, url) in [
        (std::process::id(), url.as_str()),
        (4_000_000_000, "http://127.0.0.1:1/metrics"),
    ] {
        let dir = tmp.path().join(format!("mesh-demo-{pid}"));
        std::fs::create_dir(&dir).expect("mkdir");
        let state = serde_json::json!({
            "pid": pid,
            "version": "0.1.0",
            "namespace": "demo",
            "services": ["web", "voting"],
            "api": "127.0.0.1:1",
            "proxies": [{"name": "web", "metrics": url}],
        });
        std::fs::write(dir.join("demo.json"), state.to_string()).expect("write");
    }
    // No `-n`: against the demo, its namespace.
    let out = mesh(
        &["routes", "svc/web", "--window", "200ms"],
        Some(tmp.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("GET /api/list   web       90.00%"),
        "{}",
        stdout(&out)
    );
    // What the demo does not have is an error, not an empty table.
    for (args, want) in [
        (
            &["routes", "svc/nope"][..],
            "service \"nope\" not found in namespace \"demo\": the demo's services are web, voting",
        ),
        (
            &["routes", "svc/web", "-n", "default"],
            "namespace \"default\" has no services in the demo",
        ),
    ] {
        let out = mesh(args, Some(tmp.path()));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
}

#[test]
fn runtime_failures_exit_1_and_say_why() {
    let empty = tempfile::tempdir().expect("tempdir");
    let out = mesh(&["routes", "svc/web"], Some(empty.path()));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no --metrics given and no running mesh demo found"),
        "{}",
        stderr(&out)
    );

    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let good = metrics_server(vec![before()]);
    let bad = format!("http://{closed}/metrics");
    let out = mesh(
        &[
            "routes",
            "svc/web",
            "--metrics",
            &good,
            "--metrics",
            &bad,
            "--window",
            "100ms",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("scrape {bad}")),
        "{}",
        stderr(&out)
    );

    let html = metrics_server(vec!["<html>502 Bad Gateway</html>\n".into()]);
    let out = mesh(
        &["routes", "svc/web", "--metrics", &html, "--window", "100ms"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{html} is not Prometheus metrics: line 1")),
        "{err}"
    );
}

#[test]
fn bad_flags_exit_64() {
    for (args, want) in [
        (&["routes", "pod/web"][..], "unknown resource type \"pod\""),
        (&["routes", "web"], "not TYPE/NAME"),
        (&["routes", "svc/web", "--window", "soon"], "--window"),
        (
            &["routes", "svc/web", "--window", "0ms"],
            "greater than zero",
        ),
        (
            &[
                "routes",
                "svc/web",
                "--metrics",
                "https://127.0.0.1:1/metrics",
            ],
            "only http://",
        ),
    ] {
        let out = mesh(args, None);
        assert_eq!(
            out.status.code(),
            Some(EX_USAGE),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}
