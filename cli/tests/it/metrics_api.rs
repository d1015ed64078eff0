//! Process-level tests of `mesh stat`, `mesh edges` and `mesh routes`: the real binary
//! against a tiny HTTP server standing for the controller's API, which answers each
//! path with a canned JSON answer and records what it was asked, so both the query the
//! command sends and the table it prints from a known answer are checked exactly. (The
//! API's own numbers, against what a client really sent, are the controller's test,
//! `controller/tests/it/metrics_api.rs`; the commands against the real demo are in
//! `demo.rs`.)

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Command, Output},
    sync::{Arc, Mutex},
};

const EX_USAGE: i32 = 64;

/// A canned API: `(status, body)` per path, and every request target it was sent.
struct FakeApi {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    fn start(answers: &[(&str, u16, String)]) -> Self {
        let answers: HashMap<String, (u16, String)> = answers
            .iter()
            .map(|(path, status, body)| (path.to_string(), (*status, body.clone())))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                answer(conn, &answers, &log);
            }
        });
        Self { addr, asked }
    }

    fn api_addr(&self) -> String {
        self.addr.to_string()
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("lock").clone()
    }
}

fn answer(
    mut conn: TcpStream,
    answers: &HashMap<String, (u16, String)>,
    asked: &Mutex<Vec<String>>,
) {
    let mut request = Vec::new();
    let mut buf = [0; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request);
    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
    asked.lock().expect("lock").push(target.clone());
    let path = target.split('?').next().unwrap_or("");
    let (status, body) = answers
        .get(path)
        .cloned()
        .unwrap_or((404, r#"{"error":"no such endpoint"}"#.into()));
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn mesh(args: &[&str], tmpdir: &Path) -> Output {
    // No kubeconfig either: these tests are about --api-addr and the demo.
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .env("TMPDIR", tmpdir)
        .env("HOME", tmpdir)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("mesh runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What `/api/stat` answers about the demo's deployments: `voting` answered 290 of 300
/// requests well in the window and its policy denied half a request a second, `web`
/// nothing.
fn stat_answer() -> String {
    serde_json::json!({
        "window_seconds": 60.0,
        "rows": [
            {"resource": {"type": "deployment", "namespace": "demo", "name": "voting"},
             "pods": {"meshed": 3, "total": 3},
             "responses": {"success": 290, "failure": 10},
             "success_rate": 290.0 / 300.0, "rps": 5.0,
             "latency_ms": {"p50": 1.52, "p95": 4.6, "p99": 24.1}, "seconds": 60.0,
             "tcp": {"open_connections": 3, "opened": 3, "read_bytes_per_second": 812.25,
                     "write_bytes_per_second": 1024.0},
             "unauthorized_rps": 0.5, "audit_rps": 0.0},
            {"resource": {"type": "deployment", "namespace": "demo", "name": "web"},
             "pods": {"meshed": 1, "total": 1},
             "responses": {"success": 0, "failure": 0},
             "success_rate": null, "rps": 0.0,
             "latency_ms": {"p50": null, "p95": null, "p99": null}, "seconds": 0.0,
             "tcp": {"open_connections": 0, "opened": 0, "read_bytes_per_second": 0.0,
                     "write_bytes_per_second": 0.0}}
        ],
        "overflow": {"pods": 0, "samples": 0}
    })
    .to_string()
}

fn edges_answer() -> String {
    serde_json::json!({
        "window_seconds": 60.0,
        "edges": [{
            "src": {"type": "deployment", "namespace": "demo", "name": "web"},
            "dst": {"type": "deployment", "namespace": "demo", "name": "voting"},
            "client_id": "web.demo.serviceaccount.identity.mesh.cluster.local",
            "server_id": "voting.demo.serviceaccount.identity.mesh.cluster.local",
            "secured": true, "responses": {"success": 9, "failure": 1}, "rps": 1.0,
            "tcp": {"open_connections": 1, "opened": 1, "read_bytes_per_second": 1.0,
                    "write_bytes_per_second": 1.0}
        }],
        "overflow": {"pods": 0, "samples": 0}
    })
    .to_string()
}

fn routes_answer() -> String {
    serde_json::json!({
        "window_seconds": 60.0,
        "routes": [
            {"dst": "web.demo.svc.cluster.local:80", "route": "GET /api/list",
             "responses": {"success": 27, "failure": 3}, "success_rate": 0.9, "rps": 0.5,
             "latency_ms": {"p50": 10.0 / 3.0, "p95": 6.25, "p99": 9.25}, "seconds": 60.0},
            {"dst": "web.demo.svc.cluster.local:80", "route": null,
             "responses": {"success": 0, "failure": 0}, "success_rate": null, "rps": 0.0,
             "latency_ms": {"p50": null, "p95": null, "p99": null}, "seconds": 0.0}
        ],
        "overflow": {"pods": 0, "samples": 0}
    })
    .to_string()
}

fn fake_api() -> FakeApi {
    FakeApi::start(&[
        ("/api/stat", 200, stat_answer()),
        ("/api/edges", 200, edges_answer()),
        ("/api/routes", 200, routes_answer()),
    ])
}

/// Writes a running demo's state into `tmp` (this test's pid is alive) naming `api`.
fn fake_demo(tmp: &Path, api: &str) {
    let pid = std::process::id();
    let dir = tmp.join(format!("mesh-demo-{pid}"));
    std::fs::create_dir(&dir).expect("mkdir");
    let state = serde_json::json!({
        "pid": pid,
        "version": "0.1.0",
        "namespace": "demo",
        "services": ["web", "voting"],
        "api": api,
        "proxies": [],
    });
    std::fs::write(dir.join("demo.json"), state.to_string()).expect("write");
}

#[test]
fn stat_prints_the_apis_rows_as_linkerd_does() {
    let api = fake_api();
    let tmp = tempfile::tempdir().expect("tempdir");
    let addr = api.api_addr();
    let out = mesh(&["stat", "deploy", "--api-addr", &addr], tmp.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "NAME     MESHED   SUCCESS   RPS      LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN\n\
         voting   3/3      96.67%    5.0rps   2ms           5ms           24ms          3\n\
         web      1/1      -         -        -             -             -             -\n"
    );
    let out = mesh(
        &[
            "stat",
            "deployment/voting",
            "-A",
            "--to",
            "svc/web",
            "-t",
            "30s",
            "-o",
            "wide",
            "--api-addr",
            &addr,
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("NAMESPACE   NAME     MESHED")
            && text.contains("   READ_BYTES/SEC   WRITE_BYTES/SEC   UNAUTHORIZED\n")
            && text
                .lines()
                .any(|l| l.starts_with("demo        voting   3/3      96.67%")
                    && l.ends_with("   0.5rps")),
        "{text}"
    );
    let out = mesh(
        &[
            "stat",
            "po",
            "-n",
            "emojivoto",
            "-o",
            "json",
            "--api-addr",
            &addr,
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let want: serde_json::Value = serde_json::from_str(&stat_answer()).expect("JSON");
    assert_eq!(doc, want, "-o json is the API's answer as it came");
    // No namespace given: `default` (no demo); `-A`: none at all.
    assert_eq!(
        api.asked(),
        [
            "/api/stat?resource=deploy&namespace=default&window=1m",
            "/api/stat?resource=deployment%2Fvoting&window=30s&to=svc%2Fweb",
            "/api/stat?resource=po&namespace=emojivoto&window=1m",
        ]
    );
}

#[test]
fn edges_show_mtls_and_both_identities() {
    let api = fake_api();
    let tmp = tempfile::tempdir().expect("tempdir");
    fake_demo(tmp.path(), &api.api_addr());
    // Against the demo: its API and its namespace, with no flags.
    let out = mesh(&["edges", "deploy"], tmp.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "SRC   DST      SRC_NS   DST_NS   SECURED\n\
         web   voting   demo     demo     √\n"
    );
    let out = mesh(&["edges", "deploy", "-o", "wide"], tmp.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).lines().nth(1).is_some_and(|l| l.ends_with(
            "√         web.demo.serviceaccount.identity.mesh.cluster.local   \
             voting.demo.serviceaccount.identity.mesh.cluster.local   -"
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        api.asked(),
        [
            "/api/edges?resource=deploy&namespace=demo&window=1m",
            "/api/edges?resource=deploy&namespace=demo&window=1m",
        ]
    );
}

#[test]
fn routes_come_from_the_api() {
    let api = fake_api();
    let tmp = tempfile::tempdir().expect("tempdir");
    fake_demo(tmp.path(), &api.api_addr());
    // No `-n`: against the demo, its namespace.
    let out = mesh(&["routes", "svc/web"], tmp.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ROUTE           SERVICE   SUCCESS   RPS      LATENCY_P50   LATENCY_P95   LATENCY_P99\n\
         GET /api/list   web       90.00%    0.5rps   3ms           6ms           9ms\n\
         [DEFAULT]       web       -         -        -             -             -\n"
    );
    let out = mesh(
        &["routes", "deploy/web", "-o", "json", "-t", "5m"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["routes"][0]["route"], "GET /api/list");
    assert_eq!(doc["routes"][1]["route"], serde_json::Value::Null);
    assert_eq!(
        api.asked(),
        [
            "/api/routes?resource=svc%2Fweb&namespace=demo&window=1m",
            "/api/routes?resource=svc%2Fweb&namespace=demo&window=5m",
        ]
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
        let out = mesh(args, tmp.path());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
}

#[test]
fn runtime_failures_exit_1_and_say_why() {
    let empty = tempfile::tempdir().expect("tempdir");
    for args in [
        &["stat", "deploy"][..],
        &["edges", "po"],
        &["routes", "svc/web"],
    ] {
        let out = mesh(args, empty.path());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains(
                "no controller to talk to: no --api-addr, --context or --kubeconfig given, no running mesh demo found"
            ),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .to_string();
    let out = mesh(&["stat", "deploy", "--api-addr", &closed], empty.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("cannot reach the controller's API at {closed}")),
        "{}",
        stderr(&out)
    );

    // The API's own refusal, with its reason.
    let refusing = FakeApi::start(&[(
        "/api/stat",
        400,
        r#"{"error":"window 20m0s is longer than the 600s the controller keeps"}"#.into(),
    )]);
    let out = mesh(
        &[
            "stat",
            "deploy",
            "-t",
            "20m",
            "--api-addr",
            &refusing.api_addr(),
        ],
        empty.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "the controller refused /api/stat (400 Bad Request): window 20m0s is longer than"
        ),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));

    let html = FakeApi::start(&[("/api/edges", 200, "<html>502 Bad Gateway</html>".into())]);
    let out = mesh(
        &["edges", "deploy", "--api-addr", &html.api_addr()],
        empty.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("answered 200 OK with something not JSON"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_flags_exit_64() {
    let empty = tempfile::tempdir().expect("tempdir");
    for (args, want) in [
        (
            &["stat", "deployz"][..],
            "unknown resource type \"deployz\"",
        ),
        (&["stat", "deploy", "-t", "soon"], "--time-window"),
        (&["stat", "deploy", "-t", "0ms"], "greater than zero"),
        (&["stat", "deploy", "--to", "svc"], "expected TYPE/NAME"),
        (&["stat", "deploy", "--api-addr", "nowhere"], "--api-addr"),
        (&["edges", "svc"], "made of pods"),
        (&["edges", "pods", "-n", "Demo"], "not a DNS label"),
        (&["routes", "pod/web"], "unknown resource type \"pod\""),
        (&["routes", "web"], "not TYPE/NAME"),
        (
            &["routes", "svc/web", "--window", "0ms"],
            "greater than zero",
        ),
        (&["routes", "svc/web", "-o", "yaml"], "invalid value"),
    ] {
        let out = mesh(args, empty.path());
        assert_eq!(
            out.status.code(),
            Some(EX_USAGE),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}
