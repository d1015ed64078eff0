//! The dashboard's namespace page (`#/ns/NAME`, `web/app/namespace.js` and
//! `graph.js`) in headless Chromium ([`crate::browser`]): against a loopback server of
//! the test's own standing for the controller (`/api/namespace` and its stream
//! answering JSON the test writes: every table cell, every node and edge of the graph
//! exactly as the API said, a padlock on exactly the mTLS edges, live updates that move
//! no node, sorting from the keyboard, focusable nodes, the heap flat over many
//! updates), and against the real `mesh demo` (its workloads with the numbers its API
//! answered, its call graph vote-bot → web → emoji and voting with padlocks), through
//! the test's server and as the controller itself serves it. Screenshots:
//! `target/dashboard-screenshots/namespace.png` and `namespace-dark.png` (the demo),
//! `namespace-api.png` (the test's API).

use crate::browser::Browser;
use crate::dashboard_page::{
    assert_no_page_errors, cells_of, golden_cells, heap_over_updates, js_number, press_enter,
    read_table, same, start_demo, Api, Server, WAIT,
};
use serde_json::{json, Value};
use std::time::Duration;

const DEMO_API: Api = Api {
    json: "/api/namespace?namespace=demo",
    stream: "/api/stream/namespace?namespace=demo&interval=2s",
    event: "namespace",
};

/// The page's kinds: the answer's key, the table's (and `mesh stat`'s) short kind.
const KINDS: [(&str, &str); 5] = [
    ("deployment", "deploy"),
    ("statefulset", "sts"),
    ("daemonset", "ds"),
    ("pod", "po"),
    ("service", "svc"),
];

/// The URL scheme's kind of a workload kind.
fn short(kind: &str) -> &'static str {
    match kind {
        "deployment" => "deploy",
        "statefulset" => "sts",
        "daemonset" => "ds",
        "pod" => "pod",
        other => panic!("no page for {other}"),
    }
}

/// A stat row: `(kind, name, pods, success, failure, rps, p50, p95, p99, open
/// connections)`; services have no pods.
type Row = (
    &'static str,
    &'static str,
    Option<(u64, u64)>,
    u64,
    u64,
    f64,
    f64,
    f64,
    f64,
    u64,
);

fn stat_row(&(kind, name, pods, success, failure, rps, p50, p95, p99, open): &Row) -> Value {
    let any = success + failure > 0;
    let some = |v: f64| if any { json!(v) } else { Value::Null };
    let mut row = json!({
        "resource": {"type": kind, "namespace": "demo", "name": name},
        "responses": {"success": success, "failure": failure},
        "success_rate": if any { json!(success as f64 / (success + failure) as f64) } else { Value::Null },
        "rps": rps,
        "latency_ms": {"p50": some(p50), "p95": some(p95), "p99": some(p99)},
        "seconds": 60.0,
        "tcp": {"open_connections": open, "opened": open, "read_bytes_per_second": 10.0,
                "write_bytes_per_second": 20.0}
    });
    if let Some((meshed, total)) = pods {
        row["pods"] = json!({"meshed": meshed, "total": total});
    }
    row
}

/// An edge: `(src kind, src namespace, src name, dst kind, dst namespace, dst name,
/// secured, success, failure, rps)`.
type Edge = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    u64,
    u64,
    f64,
);

fn identity(ns: &str, name: &str) -> String {
    format!("{name}.{ns}.serviceaccount.identity.mesh.cluster.local")
}

fn edge_row(&(sk, sns, sn, dk, dns, dn, secured, success, failure, rps): &Edge) -> Value {
    let any = success + failure > 0;
    json!({
        "src": {"type": sk, "namespace": sns, "name": sn},
        "dst": {"type": dk, "namespace": dns, "name": dn},
        "client_id": identity(sns, sn),
        "server_id": if secured { json!(identity(dns, dn)) } else { Value::Null },
        "secured": secured,
        "responses": {"success": success, "failure": failure},
        "success_rate": if any { json!(success as f64 / (success + failure) as f64) } else { Value::Null },
        "rps": rps,
        "tcp": {"open_connections": 1, "opened": 1, "read_bytes_per_second": 0.0,
                "write_bytes_per_second": 0.0}
    })
}

/// An `/api/namespace` answer.
fn answer(rows: &[Row], edges: &[Edge]) -> Value {
    let mut stat = serde_json::Map::new();
    for (kind, _) in KINDS {
        let of: Vec<Value> = rows.iter().filter(|r| r.0 == kind).map(stat_row).collect();
        stat.insert(kind.into(), Value::Array(of));
    }
    json!({"window_seconds": 60.0, "stat": stat, "edges": edges.iter().map(edge_row).collect::<Vec<_>>(),
           "overflow": {"pods": 0, "samples": 0}})
}

/// A kind's table as it must show: rows by name, `[key, value, text]` per cell.
fn expected_kind(doc: &Value, kind: &str) -> Vec<Vec<[String; 3]>> {
    let mut rows: Vec<&Value> = doc["stat"][kind].as_array().expect("rows").iter().collect();
    rows.sort_by_key(|r| r["resource"]["name"].as_str().unwrap_or("").to_string());
    rows.iter()
        .map(|r| {
            let name = r["resource"]["name"].as_str().expect("name").to_string();
            let mut cells = vec![["name".into(), name.clone(), name]];
            cells.extend(golden_cells(r, kind != "service", true));
            cells
        })
        .collect()
}

/// How the page names an edge's end, from namespace `here`.
fn end_name(r: &Value, here: &str) -> String {
    let name = format!(
        "{}/{}",
        short(r["type"].as_str().expect("type")),
        r["name"].as_str().expect("name")
    );
    if r["namespace"] == here {
        name
    } else {
        format!(
            "{name} (namespace {})",
            r["namespace"].as_str().unwrap_or("-")
        )
    }
}

/// The edges table as it must show, rows by their source's name as the page sorts.
fn expected_edges(doc: &Value, here: &str) -> Vec<Vec<[String; 3]>> {
    let mut rows: Vec<&Value> = doc["edges"].as_array().expect("edges").iter().collect();
    // By source, then as the page breaks ties: by the rest of the edge's key.
    rows.sort_by_key(|e| {
        (
            end_name(&e["src"], here),
            e["dst"]["type"].to_string(),
            e["dst"]["namespace"].to_string(),
            e["dst"]["name"].to_string(),
        )
    });
    rows.iter()
        .map(|e| {
            let any = e["responses"]["success"].as_u64() > Some(0)
                || e["responses"]["failure"].as_u64() > Some(0);
            let secured = e["secured"].as_bool().expect("secured");
            let id = |v: &Value| {
                v.as_str()
                    .map_or(("".into(), "-".into()), |s| (s.into(), s.into()))
            };
            let (client, client_text) = id(&e["client_id"]);
            let (server, server_text) = id(&e["server_id"]);
            vec![
                [
                    "from".into(),
                    end_name(&e["src"], here),
                    end_name(&e["src"], here),
                ],
                [
                    "to".into(),
                    end_name(&e["dst"], here),
                    end_name(&e["dst"], here),
                ],
                [
                    "rps".into(),
                    js_number(e["rps"].as_f64().expect("rps")),
                    if any {
                        format!("{:.1}rps", e["rps"].as_f64().expect("rps"))
                    } else {
                        "-".into()
                    },
                ],
                [
                    "success".into(),
                    e["success_rate"].as_f64().map_or(String::new(), js_number),
                    e["success_rate"]
                        .as_f64()
                        .map_or("-".into(), |v| format!("{:.2}%", v * 100.0)),
                ],
                [
                    "denied".into(),
                    js_number(denied_rps(e)),
                    denied(e).unwrap_or_else(|| "-".into()),
                ],
                [
                    "mtls".into(),
                    if secured { "yes" } else { "no" }.into(),
                    if secured {
                        "yes (mutual TLS)"
                    } else {
                        "no (plaintext)"
                    }
                    .into(),
                ],
                ["client".into(), client, client_text],
                ["server".into(), server, server_text],
            ]
        })
        .collect()
}

/// What the server's policy refused of an edge's calls a second (0 from an answer that
/// does not say).
fn denied_rps(e: &Value) -> f64 {
    e["unauthorized_rps"].as_f64().unwrap_or(0.0)
}

/// An edge's denials as the page says them: `denied 1.0/s`; `None` without any.
fn denied(e: &Value) -> Option<String> {
    let v = denied_rps(e);
    (v > 0.0).then(|| format!("denied {v:.1}/s"))
}

fn read_script(id: &str) -> String {
    format!(
        "[...document.querySelectorAll('#{id} tbody tr[data-key]')].map(tr => \
         [...tr.cells].map(c => [c.dataset.key, c.dataset.value ?? null, c.textContent]))"
    )
}

/// The graph as drawn: its nodes (`kind/namespace/name` and link), and its edges
/// (from, to, secured, closed padlocks, open padlocks, label, drawn as denied).
const READ_GRAPH: &str = "({ nodes: [...document.querySelectorAll('#topology a.node')].map(a => [a.dataset.id, a.getAttribute('href')]).sort(), \
    edges: [...document.querySelectorAll('#topology g.edge')].map(g => [g.dataset.from, g.dataset.to, g.dataset.secured, \
      g.querySelectorAll('.lock:not(.open)').length, g.querySelectorAll('.lock.open').length, g.querySelector('.edge-text').textContent, g.classList.contains('denied')]).sort() })";

/// The graph an answer must draw: the namespace's deployments, statefulsets and
/// daemonsets and every edge's ends; one arrow per edge row.
fn expected_graph(doc: &Value) -> Value {
    let id = |r: &Value| {
        format!(
            "{}/{}/{}",
            r["type"].as_str().unwrap(),
            r["namespace"].as_str().unwrap(),
            r["name"].as_str().unwrap()
        )
    };
    let href = |r: &Value| {
        format!(
            "#/ns/{}/{}/{}",
            r["namespace"].as_str().unwrap(),
            short(r["type"].as_str().unwrap()),
            r["name"].as_str().unwrap()
        )
    };
    let mut nodes = std::collections::BTreeMap::new();
    for kind in ["deployment", "statefulset", "daemonset"] {
        for r in doc["stat"][kind].as_array().unwrap() {
            nodes.insert(id(&r["resource"]), href(&r["resource"]));
        }
    }
    let mut edges = Vec::new();
    for e in doc["edges"].as_array().unwrap() {
        for end in [&e["src"], &e["dst"]] {
            nodes.insert(id(end), href(end));
        }
        let secured = e["secured"].as_bool().unwrap();
        let any = e["responses"]["success"].as_u64() > Some(0)
            || e["responses"]["failure"].as_u64() > Some(0);
        let numbers = format!(
            "{} · {}",
            if any {
                format!("{:.1}rps", e["rps"].as_f64().unwrap())
            } else {
                "-".into()
            },
            e["success_rate"]
                .as_f64()
                .map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
        );
        let numbers = match denied(e) {
            Some(d) => format!("{numbers} · {d}"),
            None => numbers,
        };
        edges.push(json!([
            id(&e["src"]),
            id(&e["dst"]),
            secured.to_string(),
            usize::from(secured),
            usize::from(!secured),
            if secured {
                numbers
            } else {
                format!("plaintext · {numbers}")
            },
            denied(e).is_some()
        ]));
    }
    edges.sort_by_key(|e| e.to_string());
    let nodes: Vec<Value> = nodes.into_iter().map(|(i, h)| json!([i, h])).collect();
    json!({ "nodes": nodes, "edges": edges })
}

fn sorted_graph(mut graph: Value) -> Value {
    if let Some(edges) = graph["edges"].as_array_mut() {
        edges.sort_by_key(|e| e.to_string());
    }
    graph
}

/// Waits until the page shows `doc` (every table and the graph), then checks each
/// exactly.
async fn shows(browser: &Browser, doc: &Value) {
    let mut cond = Vec::new();
    for (kind, id) in KINDS {
        let want = expected_kind(doc, kind);
        cond.push(format!(
            "JSON.stringify({}) === {}",
            read_script(&format!("workloads-{id}")),
            json!(serde_json::to_string(&want).unwrap())
        ));
        cond.push(format!(
            "document.querySelector('#workloads-{id}').closest('section').hidden === {}",
            want.is_empty()
        ));
    }
    cond.push(format!(
        "JSON.stringify({}) === {}",
        read_script("edges"),
        json!(serde_json::to_string(&expected_edges(doc, "demo")).unwrap())
    ));
    let cond = cond.join(" && ");
    if let Err(e) = browser.wait_for(&cond, WAIT).await {
        let mut shown = Vec::new();
        for (_, id) in KINDS {
            shown.push(read_table(browser, &read_script(&format!("workloads-{id}"))).await);
        }
        panic!(
            "the page never showed the API's answer: {e:#}\nwanted {doc}\nshown {shown:?}\nedges {:?}",
            read_table(browser, &read_script("edges")).await
        );
    }
    for (kind, id) in KINDS {
        assert_eq!(
            read_table(browser, &read_script(&format!("workloads-{id}"))).await,
            expected_kind(doc, kind),
            "{kind}"
        );
    }
    let graph = sorted_graph(browser.eval(READ_GRAPH).await.expect("graph"));
    assert_eq!(graph, expected_graph(doc));
}

/// Rows the later answers share.
const WEB_BUSY: Row = (
    "deployment",
    "web",
    Some((2, 2)),
    580,
    20,
    10.0,
    1.6,
    4.9,
    25.0,
    4,
);
const VOTING_FAILING: Row = (
    "deployment",
    "voting",
    Some((3, 3)),
    60,
    40,
    3.25,
    2.5,
    9.0,
    31.0,
    2,
);
const WEB_TO_VOTING: Edge = (
    "deployment",
    "demo",
    "web",
    "deployment",
    "demo",
    "voting",
    true,
    60,
    40,
    1.66,
);

fn first_answer() -> Value {
    answer(
        &[
            (
                "deployment",
                "web",
                Some((2, 2)),
                290,
                10,
                5.0,
                1.52,
                4.6,
                24.1,
                3,
            ),
            (
                "deployment",
                "voting",
                Some((3, 3)),
                75,
                25,
                4.0,
                2.0,
                8.0,
                30.0,
                2,
            ),
            (
                "deployment",
                "idle",
                Some((0, 1)),
                0,
                0,
                0.0,
                0.0,
                0.0,
                0.0,
                0,
            ),
            (
                "statefulset",
                "db",
                Some((0, 1)),
                0,
                0,
                0.0,
                0.0,
                0.0,
                0.0,
                1,
            ),
            ("pod", "web-0", Some((1, 1)), 145, 5, 2.5, 1.5, 4.5, 24.0, 2),
            (
                "pod",
                "web-1",
                Some((1, 1)),
                145,
                5,
                2.5,
                1.55,
                4.7,
                24.2,
                1,
            ),
            ("service", "web", None, 300, 0, 5.0, 1.4, 4.0, 20.0, 3),
            ("service", "voting", None, 30, 10, 0.66, 2.0, 8.0, 30.0, 0),
        ],
        &[
            (
                "deployment",
                "demo",
                "web",
                "deployment",
                "demo",
                "voting",
                true,
                30,
                10,
                0.66,
            ),
            (
                "deployment",
                "demo",
                "web",
                "statefulset",
                "demo",
                "db",
                false,
                5,
                0,
                0.08,
            ),
            (
                "deployment",
                "other",
                "loader",
                "deployment",
                "demo",
                "web",
                true,
                290,
                10,
                5.0,
            ),
        ],
    )
}

#[tokio::test]
#[cfg_attr(no_chromium, ignore = "chromium is not installed")]
async fn namespace_page_shows_the_apis_workloads_and_graph_live() {
    let first = first_answer();
    let server = Server::start_with(DEMO_API, first.clone(), true, None);
    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("{}/#/ns/demo", server.base))
        .await
        .expect("open");
    shows(&browser, &first).await;
    assert!(
        server.asked().contains(&DEMO_API.stream.to_string()),
        "took the stream: {:?}",
        server.asked()
    );

    // The commands, the markup a screen reader needs, what has no rows hidden.
    let markup = browser
        .eval(
            "({ commands: [...document.querySelectorAll('.command-text')].map(c => c.textContent), \
             hidden: [...document.querySelectorAll('section.kind')].filter(s => s.hidden).map(s => s.querySelector('table').id), \
             svg: document.querySelector('#topology').getAttribute('role'), \
             label: document.getElementById(document.querySelector('#topology').getAttribute('aria-labelledby'))?.textContent, \
             captions: [...document.querySelectorAll('table caption')].length, \
             title: document.title })",
        )
        .await
        .expect("markup");
    assert_eq!(
        markup["commands"],
        json!([
            "mesh stat deploy -n demo",
            "mesh stat sts -n demo",
            "mesh stat ds -n demo",
            "mesh stat po -n demo",
            "mesh stat svc -n demo",
            "mesh edges deploy -n demo -o wide"
        ]),
        "{markup}"
    );
    assert_eq!(markup["hidden"], json!(["workloads-ds"]), "{markup}");
    assert_eq!(markup["svg"], "img", "{markup}");
    assert_eq!(
        markup["label"],
        "Topology of namespace demo: 5 workloads, 3 edges (2 mutual TLS, 1 plaintext); the edges table below says the same in text.",
        "{markup}"
    );
    assert_eq!(markup["captions"], 6, "{markup}");
    assert_eq!(markup["title"], "Namespace demo · mesh", "{markup}");

    // Graph nodes are links the keyboard reaches.
    let focus = browser
        .eval(
            "(() => { const a = document.querySelector('#topology a.node[data-id=\"deployment/demo/voting\"]'); \
             a.focus(); return [document.activeElement === a, a.getAttribute('href'), a.tabIndex]; })()",
        )
        .await
        .expect("focus");
    assert_eq!(focus, json!([true, "#/ns/demo/deploy/voting", 0]));

    // Live: new numbers, same shape: every node stays where it was (the same
    // elements, the same places), the focus too; the labels change.
    let places = "[...document.querySelectorAll('#topology a.node')].map(a => a.dataset.id + '@' + a.getAttribute('transform')).join()";
    let before = browser.eval(places).await.expect("places");
    browser
        .eval("document.querySelector('#topology a.node').dataset.kept = 'yes'")
        .await
        .expect("mark");
    let second = answer(
        &[
            WEB_BUSY,
            VOTING_FAILING,
            (
                "deployment",
                "idle",
                Some((1, 1)),
                0,
                0,
                0.0,
                0.0,
                0.0,
                0.0,
                0,
            ),
            (
                "statefulset",
                "db",
                Some((0, 1)),
                3,
                0,
                0.05,
                1.0,
                1.0,
                1.0,
                1,
            ),
            ("service", "web", None, 600, 0, 10.0, 1.4, 4.0, 20.0, 3),
        ],
        &[
            WEB_TO_VOTING,
            (
                "deployment",
                "demo",
                "web",
                "statefulset",
                "demo",
                "db",
                false,
                3,
                0,
                0.05,
            ),
            (
                "deployment",
                "other",
                "loader",
                "deployment",
                "demo",
                "web",
                true,
                580,
                20,
                10.0,
            ),
        ],
    );
    server.set_stat(second.clone());
    shows(&browser, &second).await;
    assert_eq!(browser.eval(places).await.expect("places"), before);
    let kept = browser
        .eval("[document.querySelector('#topology a.node').dataset.kept, document.activeElement.dataset.id]")
        .await
        .expect("kept");
    assert_eq!(kept, json!(["yes", "deployment/demo/voting"]));
    let pods_hidden = browser
        .eval("document.querySelector('#workloads-po').closest('section').hidden")
        .await
        .expect("hidden");
    assert_eq!(pods_hidden, json!(true), "a kind whose rows went is hidden");

    // Sorting from the keyboard: Enter on the RPS header's button, then again.
    browser
        .eval("document.querySelector('#workloads-deploy th[data-key=rps] button').focus()")
        .await
        .expect("focus");
    let order = "[...document.querySelectorAll('#workloads-deploy tbody tr')].map(r => r.dataset.key).join()";
    for (sort, want) in [
        ("descending", "web,voting,idle"),
        ("ascending", "idle,voting,web"),
    ] {
        press_enter(&browser).await;
        browser
            .wait_for(
                &format!(
                    "document.querySelector('#workloads-deploy th[data-key=rps]').getAttribute('aria-sort') === '{sort}' && {order} === '{want}'"
                ),
                WAIT,
            )
            .await
            .expect("sorted by rps");
    }
    browser
        .eval("document.querySelector('#workloads-deploy th[data-key=name] button').click()")
        .await
        .expect("sort by name");

    // A new edge changes the shape: drawn again, with its padlock.
    let third = answer(
        &[
            WEB_BUSY,
            VOTING_FAILING,
            (
                "deployment",
                "idle",
                Some((1, 1)),
                1,
                1,
                0.03,
                1.0,
                1.0,
                1.0,
                1,
            ),
        ],
        &[
            WEB_TO_VOTING,
            (
                "deployment",
                "demo",
                "voting",
                "deployment",
                "demo",
                "idle",
                true,
                1,
                1,
                0.03,
            ),
            (
                "deployment",
                "demo",
                "idle",
                "deployment",
                "demo",
                "web",
                false,
                0,
                0,
                0.0,
            ),
        ],
    );
    server.set_stat(third.clone());
    shows(&browser, &third).await;
    browser
        .screenshot("namespace-api")
        .await
        .expect("screenshot");

    assert_no_page_errors(&browser);
}

/// The page's bytes, and the heap over many updates (the target: flat within
/// 10% over 30 minutes of one update per 2 s, 900 updates): after 100 updates, 900
/// more, every 25th with another shape (a graph drawn again), each waited for.
#[tokio::test]
#[cfg_attr(no_chromium, ignore = "chromium is not installed")]
async fn namespace_page_heap_stays_flat_over_many_updates() {
    let doc = |i: usize| {
        let rps = i as f64;
        let mut edges: Vec<Edge> = vec![
            (
                "deployment",
                "demo",
                "web",
                "deployment",
                "demo",
                "voting",
                true,
                10,
                1,
                rps,
            ),
            (
                "deployment",
                "demo",
                "web",
                "deployment",
                "demo",
                "emoji",
                true,
                10,
                0,
                1.0,
            ),
        ];
        if (i / 25) % 2 == 1 {
            edges.push((
                "deployment",
                "demo",
                "emoji",
                "deployment",
                "demo",
                "voting",
                false,
                1,
                1,
                0.1,
            ));
        }
        answer(
            &[
                (
                    "deployment",
                    "web",
                    Some((1, 1)),
                    10 + i as u64,
                    1,
                    rps,
                    1.0,
                    2.0,
                    3.0,
                    1,
                ),
                (
                    "deployment",
                    "voting",
                    Some((1, 1)),
                    10,
                    1,
                    1.0,
                    1.0,
                    2.0,
                    3.0,
                    1,
                ),
                (
                    "deployment",
                    "emoji",
                    Some((1, 1)),
                    10,
                    1,
                    1.0,
                    1.0,
                    2.0,
                    3.0,
                    1,
                ),
                ("pod", "web-0", Some((1, 1)), 10, 1, rps, 1.0, 2.0, 3.0, 1),
            ],
            &edges,
        )
    };
    let server = Server::start_with(DEMO_API, doc(0), true, None);
    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("{}/#/ns/demo", server.base))
        .await
        .expect("open");
    shows(&browser, &doc(0)).await;
    let measured = browser
        .eval(
            "(() => { const nav = performance.getEntriesByType('navigation')[0]; \
             const res = performance.getEntriesByType('resource').filter(r => !r.name.includes('/api/')); \
             return { bytes: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0), \
                      files: res.map(r => r.name.split('/').pop()), \
                      data_ms: performance.getEntriesByName('mesh:namespace-data')[0].startTime }; })()",
        )
        .await
        .expect("measure");
    eprintln!("namespace page first load: {measured}");
    let last = heap_over_updates(&browser, "namespace page", &[100, 900], |i| server.set_stat(doc(i)), |i| {
        format!(
            "document.querySelector('#workloads-deploy tr[data-key=web] td[data-key=rps]')?.dataset.value === '{i}' && \
             document.querySelectorAll('#topology g.edge').length === {}",
            if (i / 25) % 2 == 1 { 3 } else { 2 }
        )
    })
    .await;
    shows(&browser, &doc(last)).await;
    assert_eq!(
        browser.console_errors(),
        vec![],
        "no errors over the updates"
    );
}

/// Against the real `mesh demo`: through the test's server (which keeps each
/// `/api/namespace?namespace=demo` answer it passes on; the page polls, as the stream
/// stays with the test's server), the tables and the graph equal one of the last two
/// answers; the graph is the demo's call graph with a padlock on every edge. Then the
/// page as the controller itself serves it, on its own stream: no log at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_chromium, ignore = "chromium is not installed")]
async fn namespace_page_shows_the_demo_as_its_api_answers() {
    let (demo, api, _tmp) = start_demo().await;
    let server = Server::start_with(DEMO_API, Value::Null, false, Some(api));
    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("{}/#/ns/demo", server.base))
        .await
        .expect("open");
    let ready = "Number(document.querySelector('#workloads-deploy tr[data-key=web] td[data-key=rps]')?.dataset.value) > 0 && \
                 document.querySelectorAll('#topology g.edge').length >= 4 && \
                 document.querySelector('#topology g.edge.denied') !== null";
    browser
        .wait_for(ready, Duration::from_secs(90))
        .await
        .expect("the demo's workloads and edges");
    // All read at once (one answer's drawing), then the answers served so far: the
    // page shows the newest or the one before.
    let shown = browser
        .eval(&format!(
            "({{ deploys: {}, edges: {}, graph: {READ_GRAPH} }})",
            read_script("workloads-deploy"),
            read_script("edges")
        ))
        .await
        .expect("read the page");
    let served = server.served();
    let (deploys, edges) = (
        cells_of(shown["deploys"].clone()),
        cells_of(shown["edges"].clone()),
    );
    let graph = sorted_graph(shown["graph"].clone());
    let matched = served.iter().rev().take(2).find(|doc| {
        same(&deploys, &expected_kind(doc, "deployment"))
            && same(&edges, &expected_edges(doc, "demo"))
            && graph == expected_graph(doc)
    });
    let Some(doc) = matched else {
        panic!(
            "the page ({deploys:?}, {edges:?}, {graph}) is none of the last answers {:?}",
            served.iter().rev().take(2).collect::<Vec<_>>()
        )
    };
    // The demo's call graph: vote-bot calls web, web calls emoji and voting, all
    // mutual TLS with a padlock each.
    let pairs: Vec<(String, String, String, u64)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap().to_string(),
                e[1].as_str().unwrap().to_string(),
                e[2].as_str().unwrap().to_string(),
                e[3].as_u64().unwrap(),
            )
        })
        .collect();
    for (from, to) in [("vote-bot", "web"), ("web", "emoji"), ("web", "voting")] {
        let (from, to) = (
            format!("deployment/demo/{from}"),
            format!("deployment/demo/{to}"),
        );
        assert!(
            pairs
                .iter()
                .any(|p| p.0 == from && p.1 == to && p.2 == "true" && p.3 == 1),
            "no padlocked edge {from} → {to} in {pairs:?}"
        );
    }
    assert!(
        pairs.iter().all(|p| p.2 == "true" && p.3 == 1),
        "every demo edge is mTLS: {pairs:?}"
    );
    // voting's policy admits web alone: the vote-bot's own calls to voting are denied,
    // the one edge drawn red with its denials (the graph matched the answer above, so
    // the label is the answer's rate); no other edge is.
    let denied: Vec<&Value> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[6] == true)
        .collect();
    assert!(
        matches!(&denied[..], [e] if e[0] == "deployment/demo/vote-bot"
            && e[1] == "deployment/demo/voting"
            && e[5].as_str().is_some_and(|t| t.contains(" · denied ") && t.ends_with("/s"))),
        "the vote-bot → voting edge alone is denied: {graph}"
    );
    let row: Vec<&[String; 3]> = edges
        .iter()
        .find(|r| r[0][2] == "deploy/vote-bot" && r[1][2] == "deploy/voting")
        .map(|r| r.iter().collect())
        .unwrap_or_else(|| panic!("no vote-bot → voting row: {edges:?}"));
    assert!(
        row.iter()
            .any(|c| c[0] == "denied" && c[2].starts_with("denied ")),
        "{row:?}"
    );
    let nodes: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n[0].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes,
        [
            "deployment/demo/emoji",
            "deployment/demo/vote-bot",
            "deployment/demo/voting",
            "deployment/demo/web"
        ]
    );
    // Every demo pod meshed.
    for r in doc["stat"]["deployment"].as_array().unwrap() {
        assert_eq!(r["pods"]["meshed"], r["pods"]["total"], "{r}");
    }
    eprintln!(
        "browser log against the demo: {:?}",
        browser.console_errors()
    );
    assert_no_page_errors(&browser);
    // The whole page in the screenshots: a window as tall as it.
    let height = browser
        .eval("Math.ceil(document.documentElement.scrollHeight)")
        .await
        .expect("height")
        .as_u64()
        .expect("a height");
    browser
        .send(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": crate::browser::WINDOW.0, "height": height.min(4000), "deviceScaleFactor": 1, "mobile": false }),
        )
        .await
        .expect("resize");
    browser.screenshot("namespace").await.expect("screenshot");
    browser
        .send(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
        )
        .await
        .expect("dark");
    browser
        .screenshot("namespace-dark")
        .await
        .expect("screenshot");
    drop(browser);

    // As the controller serves it, on its own stream.
    let browser = Browser::start().await.expect("start chromium");
    browser
        .open(&format!("http://{api}/#/ns/demo"))
        .await
        .expect("open");
    browser
        .wait_for(ready, Duration::from_secs(60))
        .await
        .expect("the demo from the controller's own page");
    let errors = browser.console_errors();
    assert!(
        errors.is_empty(),
        "the browser logged, against the controller's own page: {errors:?}"
    );
    drop(demo);
}
