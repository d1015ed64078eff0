//! The dashboard's workload page (`#/ns/NAME/KIND/WNAME`, `web/app/workload.js` and its
//! charts, `web/app/chart.js`) in headless Chromium ([`crate::browser`]): against a
//! loopback server of the test's own that serves `web/` under the controller's CSP and
//! answers `/api/...` with JSON the test wrote (every number on the page is the API's,
//! formatted as `mesh stat` prints it; the charts drawn from `/api/series` and then the
//! stat stream; neighbours, edges with identities and padlocks, routes, the generated
//! profile, pods and TCP); the heap over many live chart updates; and against the real
//! `mesh demo` (its `web` deployment: the numbers as its API answered at that moment,
//! its neighbours, its profiled service's routes, and for the `vote-bot` service, which
//! has no profile, the generated profile byte for byte as `mesh profile --template`
//! prints it), also as the controller serves it itself. Screenshots:
//! `target/dashboard-screenshots/workload.png`, `workload-neighbours.png` and
//! `workload-dark.png`.

use crate::browser::Browser;
use crate::dashboard_page::{
    get, heap_over_updates, page_errors, read_target, respond, serve_events, serve_web_file,
    start_demo,
};
use serde_json::{json, Value};
use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

const WAIT: Duration = Duration::from_secs(15);

/// The API the test stands for, shared with the server's threads.
#[derive(Default)]
struct State {
    /// `/api/...` answers by normalized target ([`normal`]): status, type, body.
    answers: HashMap<String, (u16, &'static str, Vec<u8>)>,
    /// What `/api/stream/stat` sends (each change once); `None`: no stream (404).
    live: Option<Value>,
    generation: u64,
    /// A real controller's API, to which `/api/...` (but streams) is passed on.
    upstream: Option<SocketAddr>,
    /// Every answer passed on from upstream, in order: normalized target and body.
    served: Vec<(String, Vec<u8>)>,
}

struct Api {
    base: String,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Api {
    fn start(state: State) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new((Mutex::new(state), Condvar::new()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let state = shared.clone();
                std::thread::spawn(move || serve(conn, &state));
            }
        });
        Self { base, state }
    }

    fn set_live(&self, live: Value) {
        let (lock, changed) = &*self.state;
        let mut s = lock.lock().expect("lock");
        s.live = Some(live);
        s.generation += 1;
        changed.notify_all();
    }

    /// The answers upstream gave to `target` (normalized), oldest first.
    fn served(&self, target: &str) -> Vec<Value> {
        let want = normal(target);
        self.state
            .0
            .lock()
            .expect("lock")
            .served
            .iter()
            .filter(|(t, _)| *t == want)
            .filter_map(|(_, body)| serde_json::from_slice(body).ok())
            .collect()
    }
}

/// A target with its query's parameters decoded and sorted, so the page's spelling of
/// a query and the test's match.
fn normal(target: &str) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut out = Vec::new();
            let b = p.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    if let Ok(v) = u8::from_str_radix(&p[i + 1..i + 3], 16) {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                }
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        })
        .collect();
    params.sort();
    format!("{path}?{}", params.join("&"))
}

fn serve(mut conn: TcpStream, state: &(Mutex<State>, Condvar)) {
    let Some(target) = read_target(&mut conn) else {
        return;
    };
    let path = target.split('?').next().unwrap_or("/").to_string();
    let key = normal(&target);
    if path.starts_with("/api/stream/") {
        let live = state.0.lock().expect("lock").live.is_some();
        if live && path == "/api/stream/stat" {
            return sse(conn, state);
        }
        return respond(
            &mut conn,
            404,
            "application/json",
            br#"{"error":"no stream"}"#,
        );
    }
    if path.starts_with("/api/") {
        let (upstream, answer) = {
            let s = state.0.lock().expect("lock");
            (s.upstream, s.answers.get(&key).cloned())
        };
        if let Some(upstream) = upstream {
            let Some((status, body)) = get(upstream, &target) else {
                return respond(
                    &mut conn,
                    502,
                    "application/json",
                    br#"{"error":"upstream"}"#,
                );
            };
            // Kept before the page can have it: the page never shows an answer the
            // test has not seen.
            state
                .0
                .lock()
                .expect("lock")
                .served
                .push((key, body.clone()));
            let kind = if path == "/api/profile-template" && status == 200 {
                "text/plain; charset=utf-8"
            } else {
                "application/json"
            };
            return respond(&mut conn, status, kind, &body);
        }
        return match answer {
            Some((status, kind, body)) => respond(&mut conn, status, kind, &body),
            None if path == "/api/version" => respond(
                &mut conn,
                200,
                "application/json",
                br#"{"version":"0.1.0"}"#,
            ),
            None => {
                eprintln!("the test has no answer for {key}");
                respond(
                    &mut conn,
                    404,
                    "application/json",
                    br#"{"error":"not found"}"#,
                )
            }
        };
    }
    serve_web_file(&mut conn, &path);
}

/// `event: stat` with the live answer now and at each change.
fn sse(conn: TcpStream, state: &(Mutex<State>, Condvar)) {
    serve_events(conn, state, |s| {
        let live = s.live.clone().unwrap_or(Value::Null);
        Some((s.generation, format!("event: stat\ndata: {live}\n\n")))
    });
}

// --- The answers, and what `mesh stat` would print of them. ---

fn resource(kind: &str, name: &str) -> Value {
    json!({ "type": kind, "namespace": "demo", "name": name })
}

/// A stat row: `(success, failure)` over `seconds`, latency, TCP `(open, read, write)`.
fn row(
    kind: &str,
    name: &str,
    responses: (u64, u64),
    seconds: f64,
    latency: [f64; 3],
    tcp: (u64, f64, f64),
) -> Value {
    let all = responses.0 + responses.1;
    let some = |v: f64| if all > 0 { json!(v) } else { Value::Null };
    json!({
        "resource": resource(kind, name),
        "pods": if kind == "service" { Value::Null } else { json!({"meshed": 2, "total": 2}) },
        "responses": { "success": responses.0, "failure": responses.1 },
        "success_rate": if all > 0 { json!(responses.0 as f64 / all as f64) } else { Value::Null },
        "rps": if seconds > 0.0 { all as f64 / seconds } else { 0.0 },
        "latency_ms": { "p50": some(latency[0]), "p95": some(latency[1]), "p99": some(latency[2]) },
        "seconds": seconds,
        "tcp": { "open_connections": tcp.0, "opened": tcp.0, "read_bytes_per_second": tcp.1,
                 "write_bytes_per_second": tcp.2 },
    })
}

fn stat(rows: Vec<Value>) -> Value {
    json!({ "window_seconds": 60.0, "rows": rows, "overflow": { "pods": 0, "samples": 0 } })
}

/// A row's golden metrics as `mesh stat` prints them (`cli/src/table.rs`).
fn golden(r: &Value) -> Vec<String> {
    let any = !r["success_rate"].is_null();
    let ms = |v: &Value| {
        v.as_f64()
            .map_or("-".into(), |v| format!("{}ms", v.round()))
    };
    vec![
        r["success_rate"]
            .as_f64()
            .map_or("-".into(), |v| format!("{:.2}%", v * 100.0)),
        if any {
            format!("{:.1}rps", r["rps"].as_f64().unwrap())
        } else {
            "-".into()
        },
        ms(&r["latency_ms"]["p50"]),
        ms(&r["latency_ms"]["p95"]),
        ms(&r["latency_ms"]["p99"]),
    ]
}

/// And its TCP columns, as `mesh stat -o wide`.
fn tcp(r: &Value) -> Vec<String> {
    let t = &r["tcp"];
    if t["open_connections"].as_u64() > Some(0) || t["opened"].as_u64() > Some(0) {
        vec![
            t["open_connections"].to_string(),
            format!("{:.1}B/s", t["read_bytes_per_second"].as_f64().unwrap()),
            format!("{:.1}B/s", t["write_bytes_per_second"].as_f64().unwrap()),
        ]
    } else {
        vec!["-".into(), "-".into(), "-".into()]
    }
}

fn texts(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// A neighbours table as the page shows an answer: the rows with traffic, by name.
fn peers(doc: &Value) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["success_rate"].is_null() || tcp(r)[0] != "-")
        .map(|r| {
            let name = format!("deploy/{}", r["resource"]["name"].as_str().unwrap());
            [vec![name], golden(r)].concat()
        })
        .collect();
    rows.sort();
    rows
}

/// A table's rows as the page shows them: each row's cells' text.
async fn cells(browser: &Browser, table: &str) -> Vec<Vec<String>> {
    let got = browser
        .eval(&format!(
            "[...document.querySelectorAll('#{table} tbody tr')].filter(r => !r.querySelector('.empty'))\
             .map(r => [...r.cells].map(c => c.textContent))"
        ))
        .await
        .expect("read the table");
    serde_json::from_value(got).expect("rows of text")
}

async fn text(browser: &Browser, expression: &str) -> String {
    let v = browser.eval(expression).await.expect("eval");
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// Waits until `table` shows exactly `want`.
async fn shows(browser: &Browser, table: &str, want: &[Vec<String>]) {
    let js = format!(
        "JSON.stringify([...document.querySelectorAll('#{table} tbody tr')].filter(r => !r.querySelector('.empty'))\
         .map(r => [...r.cells].map(c => c.textContent))) === {}",
        serde_json::to_string(&serde_json::to_string(want).unwrap()).unwrap()
    );
    if let Err(e) = browser.wait_for(&js, WAIT).await {
        panic!(
            "#{table} never showed {want:?}: {e:#}\nshown {:?}",
            cells(browser, table).await
        );
    }
}

const WEB_ID: &str = "web.demo.serviceaccount.identity.mesh.cluster.local";
const VOTING_ID: &str = "voting.demo.serviceaccount.identity.mesh.cluster.local";
const BOT_ID: &str = "vote-bot.demo.serviceaccount.identity.mesh.cluster.local";

/// The loopback API's answers for `deploy/web` in `demo`.
fn loopback() -> State {
    let mut s = State::default();
    let mut answer = |target: &str, body: Value| {
        s.answers.insert(
            normal(target),
            (200, "application/json", body.to_string().into_bytes()),
        );
    };
    // Sixty points, ten seconds apart: the first five with no scrape in their step.
    let points: Vec<Value> = (0..60u64)
        .map(|k| {
            let seconds = if k < 5 { 0.0 } else { 10.0 };
            let r = row(
                "deployment",
                "web",
                if k < 5 { (0, 0) } else { (9 * k, k) },
                seconds,
                [k as f64, 2.0 * k as f64, 3.0 * k as f64],
                (1, 10.0, 20.0),
            );
            json!({ "seconds_ago": ((59 - k) * 10) as f64, "rows": [r] })
        })
        .collect();
    answer(
        "/api/series?resource=deploy/web&namespace=demo&minutes=10&step=10s",
        json!({ "step_seconds": 10.0, "span_seconds": 600.0, "points": points,
                "overflow": { "pods": 0, "samples": 0 } }),
    );
    answer(
        "/api/stat?resource=deploy/web&namespace=demo",
        stat(vec![row(
            "deployment",
            "web",
            (741, 9),
            60.0,
            [3.0, 7.0, 9.5],
            (4, 812.26, 100.04),
        )]),
    );
    answer(
        "/api/stat?resource=deploy/web&namespace=demo&window=10s",
        stat(vec![row(
            "deployment",
            "web",
            (10, 0),
            10.0,
            [1.0, 2.0, 3.0],
            (0, 0.0, 0.0),
        )]),
    );
    answer(
        "/api/stat?resource=deploy&namespace=demo&to=deploy/web",
        stat(vec![
            row(
                "deployment",
                "vote-bot",
                (120, 0),
                60.0,
                [2.0, 4.0, 5.0],
                (2, 50.0, 60.0),
            ),
            row("deployment", "emoji", (0, 0), 60.0, [0.0; 3], (0, 0.0, 0.0)),
        ]),
    );
    answer(
        "/api/stat?resource=deploy&namespace=demo&from=deploy/web",
        stat(vec![
            row(
                "deployment",
                "voting",
                (80, 20),
                60.0,
                [10.0, 600.0, 790.0],
                (0, 0.0, 0.0),
            ),
            row(
                "deployment",
                "emoji",
                (60, 0),
                60.0,
                [1.0, 2.0, 2.5],
                (0, 0.0, 0.0),
            ),
        ]),
    );
    let edge = |src: &str, dst: &str, client: &str, server: Option<&str>, rps: f64| {
        json!({ "src": resource("deployment", src), "dst": resource("deployment", dst),
                "client_id": client, "server_id": server, "secured": server.is_some(),
                "responses": { "success": 10, "failure": 0 }, "rps": rps,
                "tcp": { "open_connections": 1, "opened": 1, "read_bytes_per_second": 1.0,
                         "write_bytes_per_second": 1.0 } })
    };
    answer(
        "/api/edges?resource=deploy&namespace=demo",
        json!({ "window_seconds": 60.0, "overflow": { "pods": 0, "samples": 0 }, "edges": [
            edge("vote-bot", "web", BOT_ID, Some(WEB_ID), 2.0),
            edge("web", "voting", WEB_ID, Some(VOTING_ID), 1.7),
            edge("web", "db", WEB_ID, None, 0.5),
            edge("emoji", "voting", "emoji.demo", Some(VOTING_ID), 9.0),
        ]}),
    );
    answer(
        "/api/stat?resource=po&namespace=demo",
        stat(vec![
            row(
                "pod",
                "web-0",
                (400, 5),
                60.0,
                [3.0, 6.0, 9.0],
                (2, 400.0, 50.0),
            ),
            row(
                "pod",
                "web-1",
                (341, 4),
                60.0,
                [3.0, 8.0, 10.0],
                (2, 412.26, 50.04),
            ),
            row(
                "pod",
                "voting-0",
                (99, 1),
                60.0,
                [3.0, 8.0, 10.0],
                (1, 1.0, 1.0),
            ),
        ]),
    );
    answer(
        "/api/workload?resource=deploy/web&namespace=demo",
        json!({ "pods": [
            { "namespace": "demo", "name": "web-0", "meshed": true },
            { "namespace": "demo", "name": "web-1", "meshed": true }],
          "services": [
            { "namespace": "demo", "name": "web", "profile": true },
            { "namespace": "demo", "name": "web-admin", "profile": false }] }),
    );
    let route = |name: Option<&str>, ok: u64, failed: u64| {
        let mut r = row(
            "service",
            "web",
            (ok, failed),
            60.0,
            [4.0, 9.0, 12.0],
            (0, 0.0, 0.0),
        );
        let o = r.as_object_mut().unwrap();
        o.remove("resource");
        o.remove("pods");
        o.remove("tcp");
        o.insert("dst".into(), json!("web.demo.svc.cluster.local:80"));
        o.insert("route".into(), json!(name));
        o.insert("actual".into(), Value::Null);
        r
    };
    answer(
        "/api/routes?resource=svc/web&namespace=demo",
        json!({ "window_seconds": 60.0, "overflow": { "pods": 0, "samples": 0 }, "routes": [
            route(Some("GET /api/list"), 300, 0),
            route(Some("POST /api/vote"), 90, 10),
            route(None, 6, 0),
        ]}),
    );
    s.answers.insert(
        normal("/api/profile-template?service=web-admin&namespace=demo"),
        (
            200,
            "text/plain; charset=utf-8",
            mesh_core::profile::template::template("web-admin", "demo", "cluster.local")
                .into_bytes(),
        ),
    );
    s
}

fn live_answer(rps: u64) -> Value {
    stat(vec![row(
        "deployment",
        "web",
        (rps * 10, 0),
        10.0,
        [1.0, 2.0, 3.0],
        (0, 0.0, 0.0),
    )])
}

/// Every section against the loopback API: the numbers as it answered them.
#[tokio::test]
#[cfg_attr(no_chromium, ignore = "chromium is not installed")]
async fn the_workload_page_shows_what_the_api_answered() {
    let mut state = loopback();
    state.live = Some(live_answer(99));
    let api = Api::start(state);
    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("{}/#/ns/demo/deploy/web", api.base))
        .await
        .expect("open");
    if let Err(e) = browser
        .wait_for(
            "document.querySelector('h1')?.textContent === 'Deployment web'",
            WAIT,
        )
        .await
    {
        panic!(
            "the page never showed: {e:#}; {:?}",
            browser.console_errors()
        );
    }
    assert_eq!(
        text(&browser, "document.title").await,
        "deploy/web · demo · mesh"
    );
    assert_eq!(
        text(&browser, "document.querySelector('h1').textContent").await,
        "Deployment web"
    );

    // The workload's own row: golden metrics and TCP.
    let summary = loopback().answers[&normal("/api/stat?resource=deploy/web&namespace=demo")]
        .2
        .clone();
    let summary: Value = serde_json::from_slice(&summary).unwrap();
    let r = &summary["rows"][0];
    let want = [vec!["web".to_string(), "2/2".into()], golden(r), tcp(r)].concat();
    assert_eq!(
        want[2..],
        ["98.80%", "12.5rps", "3ms", "7ms", "10ms", "4", "812.3B/s", "100.0B/s"]
    );
    shows(&browser, "summary", &[want]).await;

    // The charts: sixty points from the series, the last one the stream's.
    browser
        .wait_for(
            "document.querySelector('#chart-rps .latest').textContent === '99.0rps'",
            WAIT,
        )
        .await
        .expect("the live point in the rps chart");
    for id in ["chart-success", "chart-rps", "chart-latency"] {
        assert_eq!(
            text(
                &browser,
                &format!("document.getElementById('{id}').dataset.points")
            )
            .await,
            "60",
            "{id}"
        );
        // One line through the 55 known points (the first five knew nothing).
        let n = browser
            .eval(&format!(
                "[...document.querySelectorAll('#{id} polyline')].map(p => p.getAttribute('points').split(' ').length)"
            ))
            .await
            .unwrap();
        let lines = if id == "chart-latency" {
            json!([55, 55, 55])
        } else {
            json!([55])
        };
        assert_eq!(n, lines, "{id}");
        let svg = browser
            .eval(&format!(
                "(() => {{ const s = document.querySelector('#{id} svg'); return [s.getAttribute('role'), s.querySelector('title').textContent, s.querySelector('desc').textContent]; }})()"
            ))
            .await
            .unwrap();
        assert_eq!(svg[0], "img");
        assert!(svg[2].as_str().unwrap().contains("latest:"), "{svg}");
    }
    assert_eq!(
        text(
            &browser,
            "document.querySelector('#chart-latency .legend').textContent"
        )
        .await,
        "p50 1msp95 2msp99 3ms"
    );
    assert_eq!(
        text(
            &browser,
            "document.querySelector('#chart-success .latest').textContent"
        )
        .await,
        "100.00%"
    );
    // The points as a table, once opened: the live point first.
    browser
        .eval("document.querySelector('#chart-rps details').open = true")
        .await
        .unwrap();
    browser
        .wait_for(
            "document.querySelectorAll('#chart-rps details tbody tr').length === 60",
            WAIT,
        )
        .await
        .expect("the chart's table");
    let first = cells(&browser, "chart-rps details table").await;
    assert_eq!(first[0][1], "99.0rps");
    assert_eq!(
        first[1][1], "58.0rps",
        "the point 10 s before: 580 responses over 10 s"
    );
    assert_eq!(first[59][1], "-", "the oldest knew nothing");

    // Neighbours, idle rows left out, each linked to its page.
    shows(
        &browser,
        "inbound",
        &[texts(&[
            "deploy/vote-bot",
            "100.00%",
            "2.0rps",
            "2ms",
            "4ms",
            "5ms",
        ])],
    )
    .await;
    shows(
        &browser,
        "outbound",
        &[
            texts(&["deploy/emoji", "100.00%", "1.0rps", "1ms", "2ms", "3ms"]),
            texts(&[
                "deploy/voting",
                "80.00%",
                "1.7rps",
                "10ms",
                "600ms",
                "790ms",
            ]),
        ],
    )
    .await;
    assert_eq!(
        text(
            &browser,
            "document.querySelector('#inbound tbody a').getAttribute('href')"
        )
        .await,
        "#/ns/demo/deploy/vote-bot"
    );

    // Edges touching web, with identities; padlocks on the mTLS ones only.
    shows(
        &browser,
        "edges",
        &[
            texts(&[
                "deploy/vote-bot",
                "deploy/web",
                " √",
                "2.0rps",
                BOT_ID,
                WEB_ID,
                "-",
            ]),
            texts(&["deploy/web", "deploy/db", "×", "0.5rps", WEB_ID, "-", "-"]),
            texts(&[
                "deploy/web",
                "deploy/voting",
                " √",
                "1.7rps",
                WEB_ID,
                VOTING_ID,
                "-",
            ]),
        ],
    )
    .await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#edges svg.padlock[role=img][aria-label]').length")
            .await
            .unwrap(),
        json!(2)
    );

    // The pods of web, not the others'.
    let pods: Value = serde_json::from_slice(
        &loopback().answers[&normal("/api/stat?resource=po&namespace=demo")].2,
    )
    .unwrap();
    let pod_rows: Vec<Vec<String>> = pods["rows"].as_array().unwrap()[..2]
        .iter()
        .map(|r| {
            [
                vec![
                    r["resource"]["name"].as_str().unwrap().to_string(),
                    "2/2".into(),
                ],
                golden(r),
                tcp(r),
            ]
            .concat()
        })
        .collect();
    shows(&browser, "pods", &pod_rows).await;
    assert_eq!(
        text(
            &browser,
            "document.querySelector('#pods tbody a').getAttribute('href')"
        )
        .await,
        "#/ns/demo/pod/web-0"
    );

    // Routes of the profiled service, the default route last.
    shows(
        &browser,
        "routes-web",
        &[
            texts(&["GET /api/list", "100.00%", "5.0rps", "4ms", "9ms", "12ms"]),
            texts(&["POST /api/vote", "90.00%", "1.7rps", "4ms", "9ms", "12ms"]),
            texts(&["[DEFAULT]", "100.00%", "0.1rps", "4ms", "9ms", "12ms"]),
        ],
    )
    .await;
    // The service without one: a button that shows the generated profile.
    browser
        .eval("document.querySelector('[data-service=web-admin] button.generate').click()")
        .await
        .unwrap();
    browser
        .wait_for("!document.querySelector('[data-service=web-admin] pre').hidden && document.querySelector('[data-service=web-admin] pre').textContent.length > 0", WAIT)
        .await
        .expect("the generated profile");
    assert_eq!(
        text(
            &browser,
            "document.querySelector('[data-service=web-admin] pre').textContent"
        )
        .await,
        mesh_core::profile::template::template("web-admin", "demo", "cluster.local")
    );

    // Every section's command, and the links.
    let commands = browser
        .eval("[...document.querySelectorAll('.command-text')].map(c => c.textContent)")
        .await
        .unwrap();
    assert_eq!(
        commands,
        json!([
            "mesh stat deploy/web -n demo -o wide",
            "mesh stat deploy/web -n demo -t 10s",
            "mesh stat deploy -n demo --to deploy/web",
            "mesh stat deploy -n demo --from deploy/web",
            "mesh edges deploy -n demo -o wide",
            "mesh routes svc/web -n demo",
            "mesh profile --template web-admin -n demo",
            "mesh stat po -n demo -o wide",
        ])
    );
    let links = browser
        .eval("['tap-link', 'top-link'].map(id => document.getElementById(id).getAttribute('href')).concat([document.querySelector('.crumbs a').getAttribute('href')])")
        .await
        .unwrap();
    assert_eq!(
        links,
        json!([
            "#/tap?resource=deploy%2Fweb&namespace=demo",
            "#/top?resource=deploy%2Fweb&namespace=demo",
            "#/ns/demo"
        ])
    );
    let errors = browser.console_errors();
    assert_eq!(
        page_errors(&errors),
        Vec::<&crate::browser::ConsoleError>::new(),
        "{errors:?}"
    );
}

/// The JS heap over many live chart updates (each waited for on the page): after a
/// full collection, within 10% over the last 900 of 1,900 updates (the first thousand
/// are the engine's warm-up).
#[tokio::test]
#[cfg_attr(no_chromium, ignore = "chromium is not installed")]
async fn the_charts_heap_stays_flat_over_many_live_updates() {
    let mut state = loopback();
    state.live = Some(live_answer(1));
    let api = Api::start(state);
    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("{}/#/ns/demo/deploy/web", api.base))
        .await
        .expect("open");
    // The first thousand updates warm the engine up (about +10%, measured); the
    // next 900 must leave the heap where it was.
    heap_over_updates(
        &browser,
        "workload page",
        &[100, 900, 900],
        |i| api.set_live(live_answer(i as u64 + 1)),
        |i| {
            format!(
                "document.querySelector('#chart-rps .latest').textContent === '{}.0rps'",
                i + 1
            )
        },
    )
    .await;
    let errors = browser.console_errors();
    assert_eq!(
        page_errors(&errors),
        Vec::<&crate::browser::ConsoleError>::new(),
        "{errors:?}"
    );
}

/// Against the real `mesh demo`: `deploy/web`'s page shows what its controller's API
/// answered, its neighbours are the demo's, its profiled service has routes; the
/// vote-bot's service, which has no profile, gets `mesh profile --template`'s text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_chromium, ignore = "chromium is not installed")]
async fn the_workload_page_shows_the_demos_web_as_its_api_answers() {
    let (demo, upstream, _tmp) = start_demo().await;
    let api = Api::start(State {
        upstream: Some(upstream),
        ..State::default()
    });
    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("{}/#/ns/demo/deploy/web", api.base))
        .await
        .expect("open");
    // Until web shows traffic over its last minute, its routes have some, and its
    // charts a line of three points (a live one every 10 s).
    browser
        .wait_for(
            "Number(document.querySelector('#summary td[data-key=rps]')?.dataset.value) > 0 && \
             document.querySelectorAll('#routes-web tbody tr:not(:has(.empty))').length > 0 && \
             document.querySelectorAll('#inbound tbody a').length > 0 && \
             document.querySelectorAll('#outbound tbody a').length > 0 && \
             document.querySelectorAll('#pods tbody a').length > 0 && \
             document.querySelector('#chart-rps polyline')?.getAttribute('points').split(' ').length >= 3 && \
             document.getElementById('main').dataset.series === 'true'",
            Duration::from_secs(90),
        )
        .await
        .expect("web with traffic, neighbours, routes and charts");

    // Each table equals one of the last two answers the API gave (the newest one may
    // not be drawn yet).
    let check =
        |table: &'static str, target: &'static str, pick: fn(&Value) -> Vec<Vec<String>>| {
            let served = api.served(target);
            assert!(!served.is_empty(), "the page never asked {target}");
            let last_two: Vec<Vec<Vec<String>>> = served.iter().rev().take(2).map(pick).collect();
            (table, last_two)
        };
    for (table, last_two) in [
        check(
            "summary",
            "/api/stat?resource=deploy/web&namespace=demo",
            |doc| {
                doc["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        let p = &r["pods"];
                        [
                            vec!["web".to_string(), format!("{}/{}", p["meshed"], p["total"])],
                            golden(r),
                            tcp(r),
                        ]
                        .concat()
                    })
                    .collect()
            },
        ),
        check(
            "inbound",
            "/api/stat?resource=deploy&namespace=demo&to=deploy/web",
            peers,
        ),
        check(
            "outbound",
            "/api/stat?resource=deploy&namespace=demo&from=deploy/web",
            peers,
        ),
    ] {
        let shown = cells(&browser, table).await;
        assert!(
            last_two.contains(&shown),
            "#{table} shows {shown:?}, none of the last answers {last_two:?}"
        );
    }
    let names = |rows: Vec<Vec<String>>| rows.into_iter().map(|r| r[0].clone()).collect::<Vec<_>>();
    assert_eq!(
        names(cells(&browser, "inbound").await),
        ["deploy/vote-bot"],
        "web's only client"
    );
    let outbound = names(cells(&browser, "outbound").await);
    assert!(
        outbound.contains(&"deploy/voting".to_string()),
        "{outbound:?}"
    );
    // Edges: web's hops are mTLS between the two proxies' identities.
    let edges = cells(&browser, "edges").await;
    let to_voting = edges
        .iter()
        .find(|e| e[0] == "deploy/web" && e[1] == "deploy/voting")
        .unwrap_or_else(|| panic!("no web → voting edge in {edges:?}"));
    assert_eq!(to_voting[2], " √", "{to_voting:?}");
    assert!(
        to_voting[4].starts_with("web.demo.serviceaccount.identity.mesh."),
        "{to_voting:?}"
    );
    assert!(
        to_voting[5].starts_with("voting.demo.serviceaccount.identity.mesh."),
        "{to_voting:?}"
    );
    // Routes: web's profile's names (and the default route).
    let routes = names(cells(&browser, "routes-web").await);
    for r in &routes {
        assert!(
            [
                "GET /api/list",
                "/api/vote",
                "GET /api/leaderboard",
                "[DEFAULT]"
            ]
            .contains(&r.as_str()),
            "a route of web's profile: {r}"
        );
    }
    // The charts have points, from the one series the page asked for.
    let points: u64 = text(
        &browser,
        "document.getElementById('chart-rps').dataset.points",
    )
    .await
    .parse()
    .unwrap();
    let series = api.served("/api/series?resource=deploy/web&namespace=demo&minutes=10&step=10s");
    assert_eq!(series.len(), 1, "the series is asked once");
    assert!(points >= 1, "the rps chart has points");
    assert!(
        browser
            .eval("document.querySelectorAll('#chart-rps polyline, #chart-rps circle').length")
            .await
            .unwrap()
            .as_u64()
            > Some(0),
        "and draws them"
    );
    // The chart's latest point is the last 10-second answer (polled here: this server
    // keeps the stream to itself).
    let live = api.served("/api/stat?resource=deploy/web&namespace=demo&window=10s");
    let latest = text(
        &browser,
        "document.querySelector('#chart-rps .latest').textContent",
    )
    .await;
    let last_two: Vec<String> = live
        .iter()
        .rev()
        .take(2)
        .map(|doc| {
            let r = &doc["rows"][0];
            if r["seconds"].as_f64() > Some(0.0) {
                format!("{:.1}rps", r["rps"].as_f64().unwrap())
            } else {
                "-".into()
            }
        })
        .collect();
    assert!(
        last_two.contains(&latest),
        "the rps chart says {latest}, the API {last_two:?}"
    );
    // Pods: those the index gave as web's.
    let workload = api.served("/api/workload?resource=deploy/web&namespace=demo");
    let want: Vec<String> = workload[0]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!want.is_empty(), "web has pods: {workload:?}");
    assert_eq!(names(cells(&browser, "pods").await), want);

    browser.screenshot("workload").await.expect("screenshot");
    browser
        .eval("document.getElementById('neighbours-title').scrollIntoView()")
        .await
        .unwrap();
    browser
        .screenshot("workload-neighbours")
        .await
        .expect("screenshot");
    browser.eval("scrollTo(0, 0)").await.unwrap();
    browser
        .send(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
        )
        .await
        .expect("dark");
    browser
        .screenshot("workload-dark")
        .await
        .expect("screenshot");

    // The page of web's pod, reached by its link: its own numbers and edges.
    browser
        .eval("document.querySelector('#pods tbody a').click()")
        .await
        .unwrap();
    let pod = &want[0];
    browser
        .wait_for(
            &format!(
                "location.hash === '#/ns/demo/pod/{pod}' && \
                 document.querySelector('h1').textContent === 'Pod {pod}' && \
                 Number(document.querySelector('#summary td[data-key=rps]')?.dataset.value) > 0 && \
                 document.querySelectorAll('#edges tbody a').length > 0"
            ),
            Duration::from_secs(30),
        )
        .await
        .expect("the pod's page with traffic and edges");
    let edges = cells(&browser, "edges").await;
    assert!(
        edges
            .iter()
            .all(|e| e[0] == format!("po/{pod}") || e[1] == format!("po/{pod}")),
        "every edge touches the pod: {edges:?}"
    );

    // The vote-bot: its service has no profile; the page generates one, byte for byte
    // `mesh profile --template`'s.
    browser
        .eval("location.hash = '#/ns/demo/deploy/vote-bot'")
        .await
        .unwrap();
    browser
        .wait_for(
            "document.querySelector('[data-service=vote-bot] button.generate') !== null",
            WAIT,
        )
        .await
        .expect("the vote-bot service, without a profile");
    browser
        .eval("document.querySelector('[data-service=vote-bot] button.generate').click()")
        .await
        .unwrap();
    browser
        .wait_for(
            "document.querySelector('[data-service=vote-bot] pre').textContent.length > 0",
            WAIT,
        )
        .await
        .expect("the generated profile");
    let shown = text(
        &browser,
        "document.querySelector('[data-service=vote-bot] pre').textContent",
    )
    .await;
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["profile", "--template", "vote-bot", "-n", "demo"])
        .output()
        .expect("mesh profile --template");
    assert!(cli.status.success());
    assert_eq!(shown, String::from_utf8(cli.stdout).unwrap());

    let errors = browser.console_errors();
    eprintln!("browser log against the demo: {errors:?}");
    assert_eq!(
        page_errors(&errors),
        Vec::<&crate::browser::ConsoleError>::new(),
        "{errors:?}"
    );
    drop(browser);

    // And as the controller serves it itself: its embedded files under its own CSP,
    // the chart's live points from its stat stream. The browser logs nothing at all.
    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("http://{upstream}/#/ns/demo/deploy/web"))
        .await
        .expect("open");
    browser
        .wait_for(
            "document.querySelector('#chart-rps .latest')?.textContent.endsWith('rps') && \
             document.querySelectorAll('#routes-web tbody tr:not(:has(.empty))').length > 0",
            Duration::from_secs(30),
        )
        .await
        .expect("the controller's own page, with live points and routes");
    let errors = browser.console_errors();
    assert!(
        errors.is_empty(),
        "the browser logged, against the controller's own page: {errors:?}"
    );
    drop(demo);
}
