//! The dashboard's tap and top pages (`web/app/tap.js`, `top.js`) in headless Chromium
//! ([`crate::browser`]):
//!
//! - against a loopback server of the test's own standing for the controller (the
//!   files under `web/` with the controller's CSP, and an `/api/stream/tap` emitting
//!   tap events, as `mesh_core::top::json::to_json` writes them, at 500 a second):
//!   the page stays responsive (an animation frame and a real click are answered
//!   while they flow), keeps the newest 500 requests, shows a request's details with
//!   its redacted headers as `[redacted]`, opens them from the keyboard, and Stop
//!   closes the stream; frame times and the heap are measured; a wrong filter is said
//!   in words, by the form before anything is asked and as the controller words its
//!   400 or 403;
//! - against the real `mesh demo`: a tap started from the controller's own page (the
//!   form filled, Start clicked) shows the demo's requests, and Stop closes the
//!   stream at the controller (its `api_event_streams_open` gauge goes back to 0);
//!   the top page shows the demo's busiest paths as `/api/top` answered them.
//!
//! Screenshots: `target/dashboard-screenshots/tap.png`, `top.png` (the demo's),
//! `tap-details.png` (the loopback stream, a row expanded).
// The emitter paces its events by real time, and the measurements read it.
#![allow(clippy::disallowed_types)]

use crate::{
    browser::{Browser, ConsoleError},
    dashboard::{controller_admin, open_streams},
    dashboard_page::{
        content_type, get, page_errors, press_enter, respond, start_demo_with_banner, web_dir,
    },
};
use serde_json::{json, Value};
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(20);

/// Tap events a second on the test's stream: each request is three (req, rsp, end).
const RATE: u64 = 500;

/// The requests the page keeps (`KEPT` in tap.js).
const KEPT: usize = 500;

/// The rows of the tap table (not their expanded details).
const ROWS: &str = "document.querySelectorAll('#tap-requests > tbody > tr:not(.details)')";

/// The requests the page has seen since Start.
const SEEN: &str = "Number(document.getElementById('tap-requests').dataset.seen ?? 0)";

/// What the test's controller knows and saw.
#[derive(Default)]
struct Shared {
    /// Tap streams open now.
    open: AtomicUsize,
    /// Request targets asked, in order.
    asked: Mutex<Vec<String>>,
    /// Each `/api/top` answer passed on from the upstream controller.
    tops: Mutex<Vec<Value>>,
}

/// The test's stand-in for the controller on 8084: `web/` as it is, `/api/version`,
/// `/api/stream/tap` and `/api/top` (of its own, or passed on to a real controller's
/// API when it has an `upstream`).
struct Server {
    base: String,
    shared: Arc<Shared>,
}

impl Server {
    fn start(upstream: Option<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let state = state.clone();
                std::thread::spawn(move || serve(conn, &state, upstream));
            }
        });
        Self { base, shared }
    }

    fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    fn asked(&self) -> Vec<String> {
        self.shared.asked.lock().expect("lock").clone()
    }

    fn tops(&self) -> Vec<Value> {
        self.shared.tops.lock().expect("lock").clone()
    }
}

fn serve(mut conn: TcpStream, shared: &Shared, upstream: Option<SocketAddr>) {
    let mut request = Vec::new();
    let mut buf = [0; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&request).into_owned();
    let target = request.split(' ').nth(1).unwrap_or("/").to_string();
    shared.asked.lock().expect("lock").push(target.clone());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let json = "application/json";
    match (path, upstream) {
        ("/api/version", _) => respond(&mut conn, 200, json, br#"{"version":"0.1.0"}"#),
        (p, Some(upstream)) if p.starts_with("/api/") => match get(upstream, &target) {
            Some((status, body)) => {
                if p == "/api/top" && status == 200 {
                    // Kept before the page can have it, so the page never shows an
                    // answer the test has not seen.
                    if let Ok(doc) = serde_json::from_slice(&body) {
                        shared.tops.lock().expect("lock").push(doc);
                    }
                }
                respond(&mut conn, status, json, &body)
            }
            None => respond(&mut conn, 502, json, br#"{"error":"upstream"}"#),
        },
        ("/api/stream/tap" | "/api/top", None) => {
            // The controller's refusals, in its words (controller/src/api.rs).
            if let Some(resource) = param("resource").filter(|r| r.starts_with("bogus")) {
                let body = json!({ "error": format!("resource {resource:?}: unknown type bogus") });
                return respond(&mut conn, 400, json, body.to_string().as_bytes());
            }
            if param("namespace") == Some("secret") {
                let body =
                    json!({ "error": "user \"dev\" may not watch pods/tap in namespace secret" });
                return respond(&mut conn, 403, json, body.to_string().as_bytes());
            }
            if path == "/api/top" {
                return respond(&mut conn, 404, json, br#"{"error":"not here"}"#);
            }
            shared.open.fetch_add(1, Ordering::SeqCst);
            emit(&mut conn);
            shared.open.fetch_sub(1, Ordering::SeqCst);
        }
        (p, _) if p.starts_with("/api/") => {
            respond(&mut conn, 404, json, br#"{"error":"not found"}"#)
        }
        (p, _) => {
            let file = if p == "/" { "/index.html" } else { p };
            let allowed = file[1..]
                .split('/')
                .all(|part| !part.is_empty() && !part.starts_with('.'));
            let path = web_dir().join(&file[1..]);
            match std::fs::read(&path) {
                Ok(body) if allowed => respond(&mut conn, 200, content_type(&path), &body),
                _ => respond(&mut conn, 404, "text/plain", b"not found"),
            }
        }
    }
}

/// `event: tap` at [`RATE`] a second, paced by the clock, until the page goes away
/// (a write fails).
fn emit(conn: &mut TcpStream) {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
                connection: close\r\n\r\nretry: 2000\n\n";
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let due = started.elapsed().as_millis() as u64 * RATE / 1000;
        let mut frames = String::new();
        while sent < due {
            let event = tap_event(sent / 3, sent % 3);
            frames.push_str(&format!("event: tap\ndata: {event}\n\n"));
            sent += 1;
        }
        if !frames.is_empty() && conn.write_all(frames.as_bytes()).is_err() {
            return;
        }
        // The pace of the emitter (every 5 ms a few events), not a wait for a condition.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Request `n`'s event `phase` (0 req, 1 rsp, 2 end), as `mesh tap -o json` prints one:
/// web's proxy's outbound request to voting, with mesh TLS; its secrets redacted by
/// the proxy; every 10th answered 503.
fn tap_event(n: u64, phase: u64) -> Value {
    let mut doc = json!({
        "id": format!("7:{n}"),
        "proxy": "out",
        "source": "198.18.0.10:40312",
        "destination": "198.18.0.20:8080",
        "tls": true,
        "source_labels": { "namespace": "demo", "deployment": "web", "pod": "web-5d8f7-abcde" },
        "destination_labels": { "namespace": "demo", "deployment": "voting", "pod": "voting-0" },
        "route_labels": {},
        "source_identity": "",
        "destination_identity": "voting.demo.serviceaccount.identity.mesh.cluster.local",
    });
    let fields = match phase {
        0 => json!({
            "event": "req", "method": "POST", "scheme": "http",
            "authority": "voting.demo.svc.cluster.local:8080", "path": format!("/api/vote/{n}"),
            "headers": [
                { "name": "authorization", "value": "[redacted]" },
                { "name": "cookie", "value": "[redacted]" },
                { "name": "x-request-id", "value": format!("req-{n}") },
            ],
        }),
        1 => json!({
            "event": "rsp", "status": if n % 10 == 9 { 503 } else { 200 },
            "latency_us": 1234 + n % 1000, "proxy_error": "",
            "headers": [
                { "name": "content-type", "value": "application/json" },
                { "name": "set-cookie", "value": "[redacted]" },
            ],
        }),
        _ => json!({
            "event": "end", "duration_us": 57, "latency_us": 1291 + n % 1000,
            "response_bytes": 42, "grpc_status": null, "reset": null, "trailers": [],
        }),
    };
    if let (Some(doc), Value::Object(fields)) = (doc.as_object_mut(), fields) {
        doc.extend(fields);
    }
    doc
}

/// A real click (mouse pressed and released) at the middle of the element `selector`
/// names; an error when it is not on the page.
async fn click(browser: &Browser, selector: &str) {
    let rect = browser
        .eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; \
             e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        ))
        .await
        .expect("find the element");
    let [x, y] = serde_json::from_value::<[f64; 2]>(rect.clone())
        .unwrap_or_else(|_| panic!("nothing to click at {selector}: {rect}"));
    for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
        browser
            .send(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await
            .expect("mouse");
    }
}

/// The reader leaves the tap table: the pointer to the page's heading, the focus too.
async fn leave_the_table(browser: &Browser) {
    click(browser, "#page-title").await;
    browser
        .wait_for("document.activeElement.id === 'page-title'", WAIT)
        .await
        .expect("the focus on the heading");
}

/// Types `text` into the input `id` as a keyboard would, after clearing it.
async fn type_into(browser: &Browser, id: &str, text: &str) {
    browser
        .eval(&format!(
            "(() => {{ const e = document.getElementById({0}); e.focus(); e.select(); }})()",
            json!(id)
        ))
        .await
        .expect("focus");
    browser
        .send("Input.insertText", json!({ "text": text }))
        .await
        .expect("type");
    if text.is_empty() {
        for kind in ["keyDown", "keyUp"] {
            browser
                .send(
                    "Input.dispatchKeyEvent",
                    json!({ "type": kind, "key": "Backspace", "code": "Backspace",
                            "windowsVirtualKeyCode": 8, "nativeVirtualKeyCode": 8 }),
                )
                .await
                .expect("key");
        }
    }
}

/// Frame intervals over `ms` of animation frames in the page, and the requests seen
/// meanwhile: `{frames, p50, p95, max, seen}` (milliseconds).
async fn frame_times(browser: &Browser, ms: u32) -> Value {
    const COSTS: [&str; 4] = [
        "TaskDuration",
        "ScriptDuration",
        "LayoutDuration",
        "RecalcStyleDuration",
    ];
    let mut before = Vec::new();
    for name in COSTS {
        before.push(browser.metric(name).await.unwrap_or(0.0));
    }
    let mut times = browser
        .eval(&format!(
            "new Promise(done => {{ const times = []; const seen0 = {SEEN}; let last = performance.now(); \
             const end = last + {ms}; const tick = now => {{ times.push(now - last); last = now; \
             if (now < end) requestAnimationFrame(tick); else {{ times.sort((a, b) => a - b); \
             done({{ frames: times.length, p50: times[times.length >> 1], \
                     p95: times[Math.floor(times.length * 0.95)], max: times[times.length - 1], \
                     seen: {SEEN} - seen0 }}); }} }}; requestAnimationFrame(tick); }})"
        ))
        .await
        .expect("frame times");
    // The main thread's busy time over the window, by kind (seconds).
    for (name, before) in COSTS.iter().zip(before) {
        let after = browser.metric(name).await.unwrap_or(0.0);
        times[*name] = json!(((after - before) * 1000.0).round() / 1000.0);
    }
    times
}

/// The JS heap after a full collection, the least of three taken 100 requests apart
/// (what is in flight between the stream and the table differs from one moment to
/// the next), and the DOM's nodes.
/// Clicks Stop and checks the tap stopped: the page says so, `open` (the streams
/// open at the server) comes down to 0, and no request arrives after.
async fn stop<F, O>(browser: &Browser, open: F)
where
    F: Fn() -> O,
    O: std::future::Future<Output = usize>,
{
    click(browser, "#tap-stop").await;
    browser
        .wait_for(
            "document.getElementById('main').dataset.tap === 'stopped' && \
             document.getElementById('tap-status').textContent === 'Stopped.' && \
             !document.getElementById('tap-start').disabled",
            WAIT,
        )
        .await
        .expect("stopped");
    let deadline = Instant::now() + WAIT;
    while open().await != 0 {
        assert!(
            Instant::now() < deadline,
            "the stream is still open after Stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = browser.eval(SEEN).await.expect("seen");
    browser
        .eval("new Promise(r => { let n = 0; const f = () => ++n < 30 ? requestAnimationFrame(f) : r(); requestAnimationFrame(f); })")
        .await
        .expect("frames");
    assert_eq!(
        browser.eval(SEEN).await.expect("seen"),
        after,
        "nothing after Stop"
    );
}

async fn heap_after_gc(browser: &Browser) -> (u64, f64) {
    let mut least = u64::MAX;
    for _ in 0..3 {
        let seen = browser.eval(SEEN).await.expect("seen").as_u64().expect("n");
        browser
            .wait_for(&format!("{SEEN} > {}", seen + 100), WAIT)
            .await
            .expect("100 more requests");
        browser
            .send("HeapProfiler.collectGarbage", json!({}))
            .await
            .expect("gc");
        least = least.min(browser.heap().await.expect("heap").0);
    }
    let nodes = browser.metric("Nodes").await.expect("nodes");
    (least, nodes)
}

#[tokio::test]
#[cfg_attr(no_chromium, ignore = "chromium is not installed")]
async fn the_tap_page_keeps_up_with_500_events_a_second() {
    let server = Server::start(None);
    let browser = Browser::start().await.expect("start chromium");
    browser
        .send("Performance.enable", json!({}))
        .await
        .expect("metrics");
    browser
        .open(&format!(
            "{}/#/tap?resource=deploy/web&namespace=demo",
            server.base
        ))
        .await
        .expect("open");
    // The form and the command come from the hash; nothing is tapped before Start.
    browser
        .wait_for(
            "document.getElementById('tap-filter-resource')?.value === 'deploy/web' && \
             document.getElementById('tap-filter-namespace').value === 'demo' && \
             document.querySelector('.command-text').textContent === 'mesh tap deploy/web -n demo' && \
             document.getElementById('nav-tap').getAttribute('aria-current') === 'page' && \
             document.title === 'Tap · mesh'",
            WAIT,
        )
        .await
        .expect("the form from the hash");
    assert!(
        !server.asked().iter().any(|a| a.starts_with("/api/stream/")),
        "{:?}",
        server.asked()
    );

    let idle = frame_times(&browser, 2000).await;
    eprintln!("tap page idle, frame intervals over 2 s: {idle}");

    click(&browser, "#tap-start").await;
    leave_the_table(&browser).await;
    browser
        .wait_for(
            &format!(
                "document.getElementById('main').dataset.tap === 'streaming' && {SEEN} > {}",
                KEPT * 2
            ),
            WAIT,
        )
        .await
        .expect("the requests stream in");
    assert_eq!(server.open(), 1);

    // Responsive while they flow: an animation frame comes round, frame times measured.
    let frames = frame_times(&browser, 3000).await;
    eprintln!("tap page at {RATE} events/s, frame intervals over 3 s: {frames}");
    assert!(frames["frames"].as_u64() > Some(1), "{frames}");
    assert!(
        frames["seen"].as_u64() > Some(0),
        "requests kept coming: {frames}"
    );

    // The newest 500 are kept, newest first, and the page says so.
    let shown = browser
        .eval(&format!(
            "({{ rows: {ROWS}.length, seen: {SEEN}, caption: document.querySelector('#tap-requests caption').textContent, \
               first: Number({ROWS}[0].cells[6].textContent.split('/').pop()), \
               last: Number({ROWS}[{ROWS}.length - 1].cells[6].textContent.split('/').pop()) }})"
        ))
        .await
        .expect("read the table");
    eprintln!("tap table: {shown}");
    assert_eq!(shown["rows"], json!(KEPT), "{shown}");
    assert!(shown["seen"].as_u64() > Some(KEPT as u64), "{shown}");
    assert!(
        shown["caption"]
            .as_str()
            .is_some_and(|c| c.contains("the newest 500 are kept")),
        "{shown}"
    );
    assert!(
        shown["first"].as_f64() > shown["last"].as_f64(),
        "newest first: {shown}"
    );

    // A real click on the newest row's button is answered with its details; its
    // secrets show as the proxy sent them: `[redacted]`.
    click(
        &browser,
        "#tap-requests > tbody > tr:not(.details) button.expand",
    )
    .await;
    browser
        .wait_for(
            "document.querySelectorAll('#tap-requests tr.details').length === 1 && \
             document.querySelector('#tap-requests tr.details table.headers') !== null",
            WAIT,
        )
        .await
        .expect("the click is answered");
    let details = browser
        .eval(
            "(() => { const d = document.querySelector('#tap-requests tr.details'); \
             const headers = Object.fromEntries([...d.querySelectorAll('table.headers tr')] \
               .map(tr => [tr.cells[0].textContent, tr.cells[1].textContent])); \
             const button = d.previousElementSibling.querySelector('button.expand'); \
             return { headers, text: d.textContent, expanded: button.getAttribute('aria-expanded'), \
                      controls: button.getAttribute('aria-controls') === d.id }; })()",
        )
        .await
        .expect("read the details");
    eprintln!("details: {details}");
    assert_eq!(
        details["headers"]["authorization"], "[redacted]",
        "{details}"
    );
    assert_eq!(details["headers"]["cookie"], "[redacted]", "{details}");
    assert_eq!(details["headers"]["set-cookie"], "[redacted]", "{details}");
    assert_eq!(
        details["headers"]["content-type"], "application/json",
        "{details}"
    );
    assert!(
        details["headers"]["x-request-id"]
            .as_str()
            .is_some_and(|v| v.starts_with("req-")),
        "{details}"
    );
    let text = details["text"].as_str().expect("text");
    for want in [
        "voting.demo.serviceaccount.identity.mesh.cluster.local",
        "198.18.0.20:8080",
        "voting.demo.svc.cluster.local:8080",
        "mTLS: yes",
        "POST",
    ] {
        assert!(text.contains(want), "the details name {want}: {text}");
    }
    assert_eq!(details["expanded"], "true");
    assert_eq!(details["controls"], true);
    // While the reader is in the table its rows hold still, and the page says so.
    let held = browser
        .eval(&format!("[...{ROWS}].map(r => r.dataset.key).join()"))
        .await
        .expect("keys");
    browser
        .wait_for(
            &format!("{SEEN} > {} && document.getElementById('tap-counts').textContent.includes('newer waiting') && [...{ROWS}].map(r => r.dataset.key).join() === {held}",
                shown["seen"].as_u64().expect("seen") + 50),
            WAIT,
        )
        .await
        .expect("the rows hold still under the pointer");
    browser.screenshot("tap-details").await.expect("screenshot");
    leave_the_table(&browser).await;
    // Left, newer ones push older ones out; the expanded row stays.
    let pinned = browser
        .eval(
            "document.querySelector('#tap-requests tr.details').previousElementSibling.dataset.key",
        )
        .await
        .expect("key");
    let stays = format!(
        "{SEEN} > {} && [...{ROWS}].some(r => r.dataset.key === {pinned}) && {ROWS}.length === {KEPT}",
        shown["seen"].as_u64().expect("seen") + KEPT as u64
    );
    if let Err(e) = browser.wait_for(&stays, WAIT).await {
        let state = browser
            .eval(&format!(
                "({{ seen: {SEEN}, rows: {ROWS}.length, counts: document.getElementById('tap-counts').textContent,                    active: document.activeElement.id || document.activeElement.tagName,                    pinned: [...{ROWS}].some(r => r.dataset.key === {pinned}) }})"
            ))
            .await;
        panic!("the expanded row stays, the rest capped: {e:#}; {state:?}");
    }

    // From the keyboard: Enter on a row's button opens its details.
    browser
        .eval(&format!(
            "[...{ROWS}].find(r => r.querySelector('button.expand[aria-expanded=false]')).querySelector('button.expand').focus()"
        ))
        .await
        .expect("focus");
    press_enter(&browser).await;
    browser
        .wait_for(
            "document.activeElement.getAttribute('aria-expanded') === 'true' && \
             document.querySelectorAll('#tap-requests tr.details').length === 2",
            WAIT,
        )
        .await
        .expect("Enter expands");
    leave_the_table(&browser).await;

    // The heap and the DOM over many more events: flat once the table is full.
    let seen0 = browser.eval(SEEN).await.expect("seen").as_u64().expect("n");
    browser
        .wait_for(
            &format!("{SEEN} > {}", seen0 + 2000),
            Duration::from_secs(60),
        )
        .await
        .expect("2000 more requests");
    let (heap0, nodes0) = heap_after_gc(&browser).await;
    browser
        .wait_for(
            &format!("{SEEN} > {}", seen0 + 6000),
            Duration::from_secs(90),
        )
        .await
        .expect("4000 more requests");
    let (heap1, nodes1) = heap_after_gc(&browser).await;
    let frames = frame_times(&browser, 2000).await;
    eprintln!(
        "tap page after 4000 more requests ({} events): JS heap after a collection {heap0} -> {heap1} bytes ({:+.1}%), DOM nodes {nodes0} -> {nodes1}; frame intervals {frames}",
        4000 * 3,
        (heap1 as f64 / heap0 as f64 - 1.0) * 100.0
    );
    assert!(
        heap1 as f64 <= heap0 as f64 * 1.10,
        "the heap grew over 10%: {heap0} to {heap1}"
    );
    assert_eq!(
        browser.eval(&format!("{ROWS}.length")).await.expect("rows"),
        json!(KEPT)
    );

    // Stop closes the stream: the server sees it go, and nothing more arrives.
    stop(&browser, || {
        let open = server.open();
        async move { open }
    })
    .await;

    let errors = browser.console_errors();
    assert_eq!(errors, Vec::<ConsoleError>::new(), "no errors");
}

#[tokio::test]
#[cfg_attr(no_chromium, ignore = "chromium is not installed")]
async fn a_wrong_filter_is_said_in_words() {
    let server = Server::start(None);
    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("{}/#/tap", server.base))
        .await
        .expect("open");
    browser
        .wait_for("document.getElementById('tap-start') !== null", WAIT)
        .await
        .expect("the page");

    // Start with nothing to tap: the form says so at the field, which gets the focus.
    click(&browser, "#tap-start").await;
    browser
        .wait_for(
            "document.getElementById('tap-filter-resource-error').textContent.startsWith('Name what to tap') && \
             document.getElementById('tap-filter-resource').getAttribute('aria-invalid') === 'true' && \
             document.activeElement.id === 'tap-filter-resource'",
            WAIT,
        )
        .await
        .expect("the resource is asked for");

    // Typed wrong, the field says what is wrong; the command follows the form.
    type_into(&browser, "tap-filter-resource", "deploy/").await;
    type_into(&browser, "tap-filter-max_rps", "0").await;
    type_into(&browser, "tap-filter-method", "GET").await;
    type_into(&browser, "tap-filter-path", "/api/it's").await;
    click(&browser, "#tap-start").await;
    browser
        .wait_for(
            "document.getElementById('tap-filter-resource-error').textContent === '“deploy/” is not TYPE[/NAME], such as deploy/web.' && \
             document.getElementById('tap-filter-max_rps-error').textContent === '“0” is not a whole number of requests a second from 1.' && \
             document.querySelector('.command-text').textContent === \"mesh tap deploy/ --method GET --path '/api/it'\\\\''s' --max-rps 0\"",
            WAIT,
        )
        .await
        .expect("the fields say what is wrong");
    // Put right, the messages go as soon as each field is right.
    type_into(&browser, "tap-filter-max_rps", "").await;
    type_into(&browser, "tap-filter-path", "").await;
    type_into(&browser, "tap-filter-resource", "bogus/web").await;
    browser
        .wait_for(
            "document.getElementById('tap-filter-resource-error').textContent === '' && \
             document.getElementById('tap-filter-max_rps-error').textContent === '' && \
             document.querySelector('.command-text').textContent === 'mesh tap bogus/web --method GET'",
            WAIT,
        )
        .await
        .expect("the messages go");
    assert!(
        !server.asked().iter().any(|a| a.starts_with("/api/stream/")),
        "nothing was asked while the form was wrong: {:?}",
        server.asked()
    );

    // The controller refuses the filter: its words, on the page; the hash holds the
    // filter, so the tap can be linked.
    click(&browser, "#tap-start").await;
    browser
        .wait_for(
            "document.getElementById('tap-status').textContent === 'The controller refused the filter: resource \"bogus/web\": unknown type bogus' && \
             document.getElementById('main').dataset.tap === 'error' && \
             !document.getElementById('tap-start').disabled && \
             location.hash === '#/tap?resource=bogus%2Fweb&method=GET'",
            WAIT,
        )
        .await
        .expect("the 400 in words");
    // Forbidden, as a cluster's controller says it.
    type_into(&browser, "tap-filter-resource", "deploy/web").await;
    type_into(&browser, "tap-filter-namespace", "secret").await;
    click(&browser, "#tap-start").await;
    browser
        .wait_for(
            "document.getElementById('tap-status').textContent === 'You may not tap this namespace (403): user \"dev\" may not watch pods/tap in namespace secret'",
            WAIT,
        )
        .await
        .expect("the 403 in words");

    // The top page says a refusal the same way.
    browser
        .eval("location.hash = '#/top?resource=bogus/web&namespace=demo'")
        .await
        .expect("navigate");
    browser
        .wait_for(
            "document.getElementById('top-status')?.textContent === 'The controller refused the filter: resource \"bogus/web\": unknown type bogus' && \
             document.querySelector('.command-text').textContent === 'mesh top bogus/web -n demo' && \
             document.getElementById('nav-top').getAttribute('aria-current') === 'page'",
            WAIT,
        )
        .await
        .expect("top's 400 in words");

    // The browser logs each refused request as a failed load (the network's log); the
    // page itself reports nothing.
    let errors = browser.console_errors();
    assert_eq!(
        page_errors(&errors),
        Vec::<&ConsoleError>::new(),
        "{errors:?}"
    );
}

/// `latency` of web/app/format.js against the rule `mesh top` prints with
/// (cli/src/top.rs): µs under a millisecond, whole ms under a second, else seconds
/// with two decimals, half up; and `micros` reading the API's float milliseconds.
#[tokio::test]
#[cfg_attr(no_chromium, ignore = "chromium is not installed")]
async fn latencies_read_as_mesh_top_prints_them() {
    let server = Server::start(None);
    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("{}/", server.base))
        .await
        .expect("open");
    let mut micros: Vec<u64> = vec![
        0, 1, 999, 1000, 1001, 999_999, 1_000_000, 1_004_999, 1_005_000, 12_345_678,
    ];
    micros.extend((0..3000).map(|i| i * 337));
    micros.extend((0..1000).map(|i| 900_000 + i * 997));
    let got = browser
        .eval(&format!(
            "import('/app/format.js').then(f => {}.map(us => [f.latency(us), f.latency(f.micros(us / 1000))]))",
            json!(micros)
        ))
        .await
        .expect("format in the page");
    let got: Vec<[String; 2]> = serde_json::from_value(got).expect("shape");
    for (us, got) in micros.iter().zip(got) {
        let want = mesh_cli::top::latency(Duration::from_micros(*us));
        assert_eq!(got, [want.clone(), want], "{us}µs");
    }
}

/// Against the real `mesh demo`: a tap started from the controller's own page shows
/// the demo's requests, with headers and identities, and Stop closes the stream at
/// the controller; the top page shows the busiest paths `/api/top` answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_chromium, ignore = "chromium is not installed")]
async fn tap_and_top_against_the_demo() {
    let (demo, api, _tmp, banner) = start_demo_with_banner().await;
    let admin = controller_admin(&banner);
    let streams = move || tokio::task::spawn_blocking(move || open_streams(admin));
    assert_eq!(streams().await.expect("gauge"), 0);

    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("http://{api}/#/tap"))
        .await
        .expect("open");
    browser
        .wait_for("document.getElementById('tap-start') !== null", WAIT)
        .await
        .expect("the page");
    type_into(&browser, "tap-filter-resource", "deploy/web").await;
    type_into(&browser, "tap-filter-namespace", "demo").await;
    browser
        .wait_for(
            "document.querySelector('.command-text').textContent === 'mesh tap deploy/web -n demo'",
            WAIT,
        )
        .await
        .expect("the command follows the form");
    click(&browser, "#tap-start").await;
    // The demo's requests, within seconds: web's calls, with their paths and answers.
    browser
        .wait_for(
            &format!(
                "[...{ROWS}].filter(r => r.cells[6].textContent.startsWith('/') && /^[0-9]+$/.test(r.cells[7].textContent)).length >= 5"
            ),
            Duration::from_secs(30),
        )
        .await
        .expect("the demo's requests on the page");
    assert_eq!(streams().await.expect("gauge"), 1, "one stream open");
    // The vote-bot's requests to web, as web's proxy let them in: the Policy column in
    // `mesh tap`'s words (web has no Server: the default policy allowed them); web's
    // own calls out carry no decision.
    browser
        .wait_for(
            &format!(
                "[...{ROWS}].some(r => r.cells[2].textContent === 'inbound' && r.cells[12].textContent === 'default/all-unauthenticated') && \
                 [...{ROWS}].filter(r => r.cells[2].textContent === 'outbound').every(r => r.cells[12].textContent === '-')"
            ),
            Duration::from_secs(30),
        )
        .await
        .expect("the inbound policy's decision in the Policy column");
    // A request web's proxy sent over mesh TLS: its details name the peer's identity
    // and show the headers as sent.
    let outbound = format!(
        "[...{ROWS}].find(r => r.cells[2].textContent === 'outbound' && r.cells[11].textContent === 'yes' && /^[0-9]+$/.test(r.cells[7].textContent))"
    );
    browser
        .wait_for(
            &format!("{outbound} !== undefined"),
            Duration::from_secs(30),
        )
        .await
        .expect("an outbound request over mTLS");
    browser
        .eval(&format!(
            "{outbound}.querySelector('button.expand').click()"
        ))
        .await
        .expect("expand");
    browser
        .wait_for(
            "[...document.querySelectorAll('#tap-requests tr.details')].some(d => \
               d.textContent.includes('.serviceaccount.identity.') && d.textContent.includes('mTLS: yes') && \
               d.querySelector('table.headers') !== null)",
            WAIT,
        )
        .await
        .expect("identities and headers in the details");
    browser.screenshot("tap").await.expect("screenshot");

    // Stop: the controller's stream closes.
    stop(&browser, || async {
        streams().await.expect("gauge") as usize
    })
    .await;
    let errors = browser.console_errors();
    assert_eq!(
        errors,
        Vec::<ConsoleError>::new(),
        "the tap page against the demo logged"
    );

    // Top, through the test's server, which keeps each `/api/top` answer it passes on.
    let server = Server::start(Some(api));
    browser
        .open(&format!(
            "{}/#/top?resource=deploy/web&namespace=demo",
            server.base
        ))
        .await
        .expect("open top");
    browser
        .wait_for(
            "Number(document.getElementById('main').dataset.answers ?? 0) >= 1 && \
             document.querySelectorAll('#top-paths tbody tr[data-key]').length > 0",
            Duration::from_secs(30),
        )
        .await
        .expect("the busiest paths");
    let shown = browser
        .eval(
            "[...document.querySelectorAll('#top-paths tbody tr[data-key]')].map(tr => \
               [...tr.cells].map(c => c.textContent))",
        )
        .await
        .expect("read the table");
    let shown: Vec<Vec<String>> = serde_json::from_value(shown).expect("shape");
    let tops = server.tops();
    let answers: Vec<Vec<Vec<String>>> = tops.iter().rev().take(2).map(top_rows).collect();
    let mut sorted = shown.clone();
    sorted.sort();
    assert!(
        answers.iter().any(|a| {
            let mut a = a.clone();
            a.sort();
            a == sorted
        }),
        "the table {shown:?} is none of the last /api/top answers {answers:?}"
    );
    let counts: Vec<u64> = shown.iter().map(|r| r[4].parse().expect("count")).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "busiest first: {counts:?}"
    );
    assert!(
        shown.iter().any(|r| r[2] == "GET" && r[3].starts_with('/')),
        "the demo's paths: {shown:?}"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('.command-text').textContent")
            .await
            .expect("command"),
        "mesh top deploy/web -n demo"
    );
    browser.screenshot("top").await.expect("screenshot");
    let errors = browser.console_errors();
    assert_eq!(
        errors,
        Vec::<ConsoleError>::new(),
        "the top page against the demo logged"
    );
    drop(demo);
}

/// An `/api/top` answer's rows as the page must show them: the cells' text.
fn top_rows(answer: &Value) -> Vec<Vec<String>> {
    let latency = |v: &Value| {
        let ms = v.as_f64().expect("ms");
        mesh_cli::top::latency(Duration::from_micros((ms * 1000.0 + 1e-3).floor() as u64))
    };
    answer["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or("-").to_string();
            vec![
                text("source"),
                text("destination"),
                text("method"),
                text("path"),
                r["count"].to_string(),
                latency(&r["best_ms"]),
                latency(&r["worst_ms"]),
                latency(&r["last_ms"]),
                format!("{:.2}%", r["success_rate"].as_f64().expect("rate") * 100.0),
            ]
        })
        .collect()
}
