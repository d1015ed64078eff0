//! `mesh dashboard` against a running demo, and the dashboard's live tap stream: the
//! real `mesh`, `mesh-controller` and `mesh-proxy` binaries on loopback.
// This measures real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

use super::demo::{free_port_block, Demo};
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

/// The policy the controller puts on every answer (`mesh_controller::dashboard::CSP`).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// An HTTP/1.0 GET: the status, the head's lines, and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, Vec<String>, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("an answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines().map(str::to_string);
    let status = lines.next().expect("a status line");
    let status = status.split_whitespace().nth(1).expect("a status");
    (
        status.parse().expect("a number"),
        lines.collect(),
        body.to_string(),
    )
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The controller's admin server, from its row of the demo's banner's table.
pub(crate) fn controller_admin(banner: &[String]) -> SocketAddr {
    banner
        .iter()
        .filter(|l| l.split_whitespace().next() == Some("controller"))
        .flat_map(|l| l.split_whitespace())
        .find_map(|w| {
            w.strip_prefix("http://")?
                .strip_suffix("/metrics")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no controller metrics URL in the banner: {banner:#?}"))
}

/// The event streams open at the controller whose admin server is `admin`
/// (`api_event_streams_open` on its `/metrics`).
pub(crate) fn open_streams(admin: SocketAddr) -> u64 {
    let (status, _, page) = get(admin, "/metrics");
    assert_eq!(status, 200);
    page.lines()
        .find_map(|l| l.strip_prefix("api_event_streams_open "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no api_event_streams_open:\n{page}"))
}

#[test]
fn dashboard_prints_the_demos_url_and_streams_its_taps() {
    let mesh = env!("CARGO_BIN_EXE_mesh");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut demo = Demo::start(mesh, free_port_block(), tmp.path());
    let banner = demo.banner();
    assert!(
        banner.iter().any(|l| l.trim().ends_with("mesh dashboard")),
        "the banner offers `mesh dashboard`: {banner:#?}"
    );
    let admin = controller_admin(&banner);
    let open_streams = || open_streams(admin);
    assert_eq!(open_streams(), 0);

    // Against the demo it returns at once, with the URL on stdout.
    let started = Instant::now();
    let out = Command::new(mesh)
        .arg("dashboard")
        .env("TMPDIR", tmp.path())
        .output()
        .expect("mesh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let url = stdout.lines().next().expect("a URL").trim();
    let addr: SocketAddr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("not an http://ADDR/ URL: {url:?}"));
    assert!(addr.ip().is_loopback(), "{url}");
    let announced = format!("dashboard: {url} ");
    assert!(
        banner.iter().any(|l| l.trim().starts_with(&announced)),
        "the banner gives the same URL: {banner:#?}"
    );

    // The URL answers the front end (once web/ has one), always with the policy.
    let (status, head, body) = get(addr, "/");
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/index.html");
    match std::fs::read_to_string(&built) {
        Ok(index) => {
            assert_eq!(status, 200, "{head:?}");
            assert_eq!(body, index);
        }
        Err(_) => assert_eq!(status, 404, "{head:?}"),
    }
    assert_eq!(
        header(&head, "content-security-policy"),
        Some(CSP),
        "{head:?}"
    );
    assert_eq!(header(&head, "x-frame-options"), Some("DENY"), "{head:?}");

    // The tap stream: the web pod's requests, as events, within seconds.
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    write!(
        stream,
        "GET /api/stream/tap?resource=deploy/web&namespace=demo HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
        addr.port()
    )
    .expect("send");
    let mut lines = BufReader::new(stream.try_clone().expect("a second handle")).lines();
    let status = lines.next().expect("a status line").expect("read");
    assert!(status.contains(" 200 "), "{status}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let request = loop {
        assert!(Instant::now() < deadline, "no tap event: {seen:#?}");
        let line = lines.next().expect("the stream goes on").expect("read");
        if let Some(json) = line.strip_prefix("data: ") {
            // Chunked: the event's lines come whole, within one chunk.
            let event: serde_json::Value = serde_json::from_str(json).expect("JSON");
            if event["event"] == "req" {
                break event;
            }
        }
        seen.push(line);
    };
    assert!(seen.iter().any(|l| l == "retry: 2000"), "{seen:#?}");
    assert!(seen.iter().any(|l| l == "event: tap"), "{seen:#?}");
    assert_eq!(request["tls"], true, "{request}");
    assert!(
        request["path"].as_str().is_some_and(|p| p.starts_with('/')),
        "{request}"
    );

    // The client leaves: the controller's stream, and the tap under it, end with it.
    assert_eq!(open_streams(), 1);
    drop(lines);
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_streams() != 0 {
        assert!(
            Instant::now() < deadline,
            "the tap stream outlived its client"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// In a cluster, `mesh dashboard` opens its own port-forward to the controller's pod,
/// prints its URL, and keeps it open until Ctrl-C, then exits cleanly and the URL is
/// gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_keeps_its_port_forward_until_ctrl_c() {
    use super::cluster::{cluster_with, Controller, DEADLINE};
    use nix::{
        sys::signal::{kill, Signal},
        unistd::Pid,
    };

    let controller = tokio::task::spawn_blocking(Controller::start)
        .await
        .expect("the controller starts");
    let kube = cluster_with(&controller).await;
    let (mut child, addr, _tmp) = dashboard_in(&kube).await;
    let forwards = kube.stats().port_forwards;

    // The URL leads to the controller, through the forward, while mesh runs.
    let (status, head, body) = tokio::task::spawn_blocking(move || get(addr, "/api/version"))
        .await
        .expect("a GET");
    assert_eq!(status, 200, "{head:?} {body}");
    assert!(body.contains(env!("CARGO_PKG_VERSION")), "{body}");
    assert_eq!(header(&head, "content-security-policy"), Some(CSP));
    let (status, head, _) = tokio::task::spawn_blocking(move || get(addr, "/"))
        .await
        .expect("a GET");
    assert!(status == 200 || status == 404, "{head:?}");
    assert_eq!(header(&head, "content-security-policy"), Some(CSP));
    assert!(kube.stats().port_forwards > forwards, "{:?}", kube.stats());
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "mesh stayed up"
    );

    // Ctrl-C: a clean exit, and the forward closed with it.
    let pid = child.id().expect("running");
    kill(Pid::from_raw(pid as i32), Signal::SIGINT).expect("signal mesh");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("mesh exits after Ctrl-C")
        .expect("wait");
    assert!(status.success(), "{status}");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the port-forward outlived mesh"
    );
    drop(controller);
}

/// In a cluster the dashboard's URL is `mesh dashboard`'s own relay: the page's API
/// calls reach the controller with the kubeconfig user's token (so tap works with the
/// user's rights), the pages themselves without it, and a request naming another host
/// (a DNS-rebinding page) is refused before anything reaches the controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_the_dashboard_calls_the_api_with_the_users_token() {
    use super::cluster::cluster_forwarding;
    use std::{
        net::TcpListener,
        sync::{Arc, Mutex},
    };

    // The controller's API port: answers every request, and keeps each request's head.
    let heads: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let api = listener.local_addr().expect("addr");
    let seen = heads.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut head = vec![];
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end().to_string();
                if line.is_empty() {
                    break;
                }
                head.push(line);
            }
            let body = format!("{{\"version\":\"{}\"}}", env!("CARGO_PKG_VERSION"));
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            seen.lock().unwrap().push(head);
        }
    });
    let kube = cluster_forwarding(api, api).await;
    let (child, addr, _tmp) = dashboard_in(&kube).await;
    let requests = |heads: &Arc<Mutex<Vec<Vec<String>>>>, target: &str| -> Vec<Vec<String>> {
        let wanted = format!("GET {target} ");
        heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.first().is_some_and(|l| l.starts_with(&wanted)))
            .cloned()
            .collect()
    };

    let tap = "/api/stream/tap?resource=deploy/web&namespace=shop";
    let (status, head, body) = tokio::task::spawn_blocking(move || get(addr, tap))
        .await
        .expect("a GET");
    assert_eq!(status, 200, "{head:?} {body}");
    let seen = requests(&heads, tap);
    assert_eq!(seen.len(), 1, "{:?}", heads.lock().unwrap());
    assert_eq!(
        header(&seen[0], "authorization"),
        Some("Bearer test-token"),
        "{seen:?}"
    );

    let (status, head, _) = tokio::task::spawn_blocking(move || get(addr, "/app/main.js"))
        .await
        .expect("a GET");
    assert_eq!(status, 200, "{head:?}");
    let seen = requests(&heads, "/app/main.js");
    assert_eq!(seen.len(), 1, "{:?}", heads.lock().unwrap());
    assert_eq!(header(&seen[0], "authorization"), None, "{seen:?}");

    // Another host's page, its name rebound to this address: refused here.
    let rebound = tokio::task::spawn_blocking(move || {
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "GET /api/top?resource=deploy HTTP/1.0\r\nHost: evil.example:{}\r\n\r\n",
            addr.port()
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("an answer");
        response
    })
    .await
    .expect("a GET");
    assert!(
        rebound.starts_with("HTTP/1.0 403") || rebound.starts_with("HTTP/1.1 403"),
        "{rebound}"
    );
    assert!(rebound.contains("evil.example"), "{rebound}");
    assert!(
        requests(&heads, "/api/top?resource=deploy").is_empty(),
        "{:?}",
        heads.lock().unwrap()
    );
    drop(child);
}

/// The page, served by a real controller, recovers by itself when the controller is
/// restarted: "Disconnected, retrying…" while it is down, then live numbers again from
/// the new process, without a reload.
#[tokio::test]
#[cfg_attr(no_chromium, ignore = "chromium is not installed")]
async fn the_page_recovers_when_the_controller_restarts() {
    use super::{browser::Browser, cluster::Controller};
    const WAIT: Duration = Duration::from_secs(30);

    let mut controller = tokio::task::spawn_blocking(Controller::start)
        .await
        .expect("the controller starts");
    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("http://{}/#/", controller.api))
        .await
        .expect("open");
    let shown = "document.querySelector('#namespaces tbody tr[data-key=shop]') !== null \
                 && document.getElementById('status').textContent === ''";
    browser
        .wait_for(shown, WAIT)
        .await
        .expect("the shop namespace, live");
    // Marks this page: a reload would lose it.
    browser
        .eval("window.meshSamePage = true")
        .await
        .expect("mark");

    let mut controller = tokio::task::spawn_blocking(move || {
        controller.stop();
        controller
    })
    .await
    .expect("stopped");
    browser
        .wait_for(
            "document.getElementById('status').textContent === 'Disconnected, retrying…' \
             && document.body.classList.contains('disconnected')",
            WAIT,
        )
        .await
        .expect("says it is disconnected");
    let before = browser
        .eval("document.getElementById('updated').textContent")
        .await
        .expect("updated");

    let controller = tokio::task::spawn_blocking(move || {
        controller.restart();
        controller
    })
    .await
    .expect("restarted");
    browser
        .wait_for(
            &format!(
                "{shown} && !document.body.classList.contains('disconnected') \
                 && document.getElementById('updated').textContent !== {before}"
            ),
            WAIT,
        )
        .await
        .expect("live again from the new controller");
    assert_eq!(
        browser
            .eval("window.meshSamePage === true")
            .await
            .expect("eval"),
        serde_json::Value::Bool(true),
        "the page recovered without a reload"
    );
    drop(controller);
}

/// `mesh dashboard` against the fake cluster `kube` (kubeconfig context `main`), and
/// the loopback URL it printed; killed when the child is dropped. The rest is what
/// its kubeconfig names, kept as long as it runs.
async fn dashboard_in(
    kube: &mesh_kube_fake::FakeKube,
) -> (
    tokio::process::Child,
    SocketAddr,
    (tempfile::TempDir, mesh_kube_fake::FakeKube),
) {
    use super::cluster::{kubeconfig, DEADLINE};
    use tokio::io::AsyncBufReadExt as _;

    let empty = mesh_kube_fake::FakeKube::start()
        .await
        .expect("a fake API server");
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(tmp.path(), "config", &kube.url(), &empty.url(), "main");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .arg("dashboard")
        .arg("--kubeconfig")
        .arg(&config)
        .env("TMPDIR", tmp.path())
        .env("HOME", tmp.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mesh runs");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("a URL in time")
        .expect("read stdout")
        .expect("a URL");
    let addr: SocketAddr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("not an http://ADDR/ URL: {url:?}"));
    assert!(addr.ip().is_loopback(), "{url}");
    (child, addr, (tmp, empty))
}
