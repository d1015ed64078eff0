//! Discovery end to end: a fake Kubernetes API server (the real list/watch protocol, driven
//! by the real kube-rs client inside `mesh-controller`), the controller on its
//! `kubernetes` backend, a `mesh-proxy` in explicit mode resolving a service name through
//! it, and backends on loopback addresses standing in for pods.
//!
//! Traffic runs without pause while the cluster changes under it, and every test checks
//! that it follows each change with no failed request: scaling up and down, readiness
//! flips, port renames, watch expiry (410 and a re-list), controller restarts. A pod is
//! only stopped once the proxy has stopped sending to it, as Kubernetes removes an
//! endpoint before a pod's graceful shutdown ends.
//!
//! Needs `mesh-controller` and `mesh-proxy` built (`cargo build --workspace --bins`).
// Tests measure real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

use mesh_integration_tests::mesh::{free_port, Backend, Controller, Load, Proxy};
use mesh_kube_fake::{endpoint_slice, pod, service, Endpoint, FakeKube, Kind, ServicePort};
use std::{net::IpAddr, time::Duration};

const NS: &str = "default";
const AUTHORITY: &str = "web.default.svc.cluster.local";
/// How long any one change may take to reach the proxy's traffic.
const FOLLOW: Duration = Duration::from_secs(20);
/// Responses in a row without a backend that show the proxy has let it go.
const AVOIDED: usize = 300;

/// Loopback addresses for one test's pods, distinct per test so that tests running side
/// by side can use the same ports.
fn pod_ip(test: u8, pod: u8) -> IpAddr {
    IpAddr::from([127, 77, test, pod])
}

/// The `web` service: port 80 named `http`, targeting the named container port `http`.
fn web_service(port_name: &str) -> serde_json::Value {
    service(
        NS,
        "web",
        "198.19.0.10",
        &[ServicePort::new(port_name, 80).target_name(port_name)],
    )
}

/// `web`'s endpoint slice in test `test`: `(i, ready)` each, for pod `web-<i>` at
/// [`pod_ip`]`(test, i + 1)`, on the resolved target port.
fn web_slice(test: u8, port_name: &str, port: u16, endpoints: &[(u8, bool)]) -> serde_json::Value {
    let endpoints: Vec<Endpoint> = endpoints
        .iter()
        .map(|&(i, ready)| {
            Endpoint::new(&pod_ip(test, i + 1).to_string(), ready).pod(&format!("web-{i}"))
        })
        .collect();
    endpoint_slice(NS, "web-abcde", "web", &[(port_name, port)], &endpoints)
}

/// A pod of the `web` deployment.
fn web_pod(name: &str, ip: IpAddr) -> serde_json::Value {
    pod(
        NS,
        name,
        &ip.to_string(),
        "web",
        Some(("ReplicaSet", "web-5d4f8c7b9")),
        &[("app", "web"), ("pod-template-hash", "5d4f8c7b9")],
    )
}

/// Starts `n` backends `web-<i>` of test `test` on `ports`.
async fn web_backends(test: u8, n: u8, ports: &[u16]) -> Vec<Backend> {
    let mut backends = Vec::new();
    for i in 0..n {
        let b = Backend::start(
            &format!("web-{i}"),
            pod_ip(test, i + 1),
            ports,
            Duration::ZERO,
        )
        .await
        .expect("backend");
        backends.push(b);
    }
    backends
}

/// Creates the pods of `backends` (test `test`), the `web` service and a slice with
/// the first two pods ready on `port`, then waits until the controller has indexed
/// them.
fn create_web(mesh: &Mesh, test: u8, backends: &[Backend], port: u16) {
    let api = &mesh.api;
    for b in backends {
        api.apply(web_pod(&b.name, b.ip)).unwrap();
    }
    api.apply(web_service("http")).unwrap();
    let first_two: Vec<(u8, bool)> = (0..backends.len().min(2) as u8)
        .map(|i| (i, true))
        .collect();
    api.apply(web_slice(test, "http", port, &first_two))
        .unwrap();
    wait_indexed(&mesh.controller, 1.0);
}

/// A fake API server, a controller on it and a proxy on the controller.
struct Mesh {
    api: FakeKube,
    controller: Controller,
    proxy: Proxy,
}

impl Mesh {
    async fn start() -> Mesh {
        let api = FakeKube::start().await.expect("fake API server");
        let kubeconfig = api.kubeconfig_path().to_path_buf();
        let controller = blocking(move || Controller::kubernetes(&kubeconfig, None)).await;
        let destination = controller.destination;
        // The whole suite shares two cores: a first lookup may take longer than the
        // default 1 s, and these tests are about following changes, not about that.
        let env = [("MESH_PROXY_DISCOVERY_TIMEOUT", "10s")];
        let proxy = blocking(move || Proxy::explicit(destination, &env)).await;
        Mesh {
            api,
            controller,
            proxy,
        }
    }
}

/// Runs a blocking start-up (processes, waits on `/ready`) off the runtime's threads, so
/// the fake API server keeps answering meanwhile.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("start-up task")
        .expect("start-up")
}

/// Waits until the controller's index holds `n` endpoint slices: before that, a new
/// name is unknown to it, and a proxy asking would rightly fall back and fail.
fn wait_indexed(controller: &Controller, n: f64) {
    mesh_integration_tests::wait_until("the controller to index the slices", FOLLOW, || {
        let m = controller.metrics()?;
        let slices = m.sum(
            "destination_index_objects",
            &[("resource", "endpointslices")],
        );
        Ok((slices == n).then_some(()))
    })
    .unwrap();
}

fn assert_no_failures(load: &Load, step: &str) {
    let stats = load.stats();
    assert!(
        stats.failures.is_empty(),
        "{step}: {} failed requests, first: {:?} (served by backend: {:?})",
        stats.failures.len(),
        stats.failures.first(),
        stats.by_backend
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_follows_scaling_readiness_port_renames_and_watch_expiry() {
    const T: u8 = 1;
    let (p, q) = (free_port(), free_port());
    let mut backends = web_backends(T, 4, &[p, q]).await;
    let mesh = Mesh::start().await;
    let api = &mesh.api;
    create_web(&mesh, T, &backends, p);
    let load = Load::start(mesh.proxy.outbound, AUTHORITY, 4);
    load.wait_for("web-0 and web-1 to serve", FOLLOW, |s| {
        s.by_backend.contains_key("web-0") && s.by_backend.contains_key("web-1")
    })
    .await
    .unwrap();
    assert_no_failures(&load, "two endpoints");

    // Scale up: a third pod joins.
    api.apply(web_slice(T, "http", p, &[(0, true), (1, true), (2, true)]))
        .unwrap();
    load.wait_for("web-2 to serve", FOLLOW, |s| {
        s.by_backend.contains_key("web-2")
    })
    .await
    .unwrap();
    assert_no_failures(&load, "scale up");

    // Scale down: web-0 leaves the slice; once the proxy no longer sends to it, it stops.
    api.apply(web_slice(T, "http", p, &[(1, true), (2, true)]))
        .unwrap();
    load.wait_until_avoided("web-0", AVOIDED, FOLLOW)
        .await
        .unwrap();
    api.delete(Kind::Pod, NS, "web-0").unwrap();
    backends[0].stop();
    let before = load.stats().ok();
    load.wait_for("traffic after web-0 stopped", FOLLOW, |s| {
        s.ok() > before + 500
    })
    .await
    .unwrap();
    assert_no_failures(&load, "scale down");

    // Readiness: web-1 turns unready (it keeps running, as a pod failing its probe does),
    // then ready again.
    api.apply(web_slice(T, "http", p, &[(1, false), (2, true)]))
        .unwrap();
    load.wait_until_avoided("web-1", AVOIDED, FOLLOW)
        .await
        .unwrap();
    let served = backends[1].served();
    api.apply(web_slice(T, "http", p, &[(1, true), (2, true)]))
        .unwrap();
    load.wait_for("web-1 to serve again", FOLLOW, |_| {
        backends[1].served() > served
    })
    .await
    .unwrap();
    assert_no_failures(&load, "readiness flip");

    // Port rename: the service port and its named target become `web`, and the pods
    // expose it on another number; traffic moves to the new port.
    api.apply(web_service("web")).unwrap();
    api.apply(web_slice(T, "web", q, &[(1, true), (2, true)]))
        .unwrap();
    let on_q = |b: &Backend| b.served_on(q);
    load.wait_for("traffic on the renamed port", FOLLOW, |_| {
        on_q(&backends[1]) > 0 && on_q(&backends[2]) > 0
    })
    .await
    .unwrap();
    // Once nothing goes to the old port any more, a pod that dropped it would be fine.
    let on_p = || backends[1].served_on(p) + backends[2].served_on(p);
    let settled = on_p();
    let before = load.stats().ok();
    load.wait_for("traffic only on the new port", FOLLOW, |s| {
        s.ok() > before + 500
    })
    .await
    .unwrap();
    assert_eq!(
        on_p(),
        settled,
        "nothing goes to the old port after the rename"
    );
    assert_no_failures(&load, "port rename");

    // Watch expiry: history is compacted and every watch ends, so the controller's next
    // watch gets 410 Gone and it re-lists. A pod added meanwhile arrives with the list.
    let restarts = |c: &Controller| {
        c.metrics()
            .map(|m| m.sum("destination_watch_restarts_total", &[]))
            .unwrap_or(0.0)
    };
    let before_restarts = restarts(&mesh.controller);
    let gone_before = api.stats().gone;
    api.expire();
    api.apply(web_slice(T, "web", q, &[(1, true), (2, true), (3, true)]))
        .unwrap();
    api.wait_for_stats("a watch told its version is gone", FOLLOW, |s| {
        s.gone > gone_before
    })
    .await
    .unwrap();
    load.wait_for("web-3 to serve after the re-list", FOLLOW, |s| {
        s.by_backend.contains_key("web-3")
    })
    .await
    .unwrap();
    let controller = &mesh.controller;
    mesh_integration_tests::wait_until("the controller to count its re-list", FOLLOW, || {
        Ok((restarts(controller) > before_restarts).then_some(()))
    })
    .unwrap();
    assert_no_failures(&load, "watch expiry");

    // The proxy labels its outbound metrics with what discovery said of each endpoint.
    let metrics = mesh.proxy.metrics().unwrap();
    for pod in ["web-1", "web-2", "web-3"] {
        let n = metrics.sum(
            "request_total",
            &[
                ("direction", "outbound"),
                ("dst_namespace", NS),
                ("dst_service", "web"),
                ("dst_pod", pod),
                ("dst_deployment", "web"),
                ("dst_serviceaccount", "web"),
            ],
        );
        assert!(
            n > 0.0,
            "no request_total with dst labels of {pod}:\n{}",
            metrics.show("request_total", &[])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_service_fails_cleanly_and_recreated_service_resumes() {
    const T: u8 = 2;
    let p = free_port();
    let backends = web_backends(T, 1, &[p]).await;
    let mesh = Mesh::start().await;
    let api = &mesh.api;
    create_web(&mesh, T, &backends, p);
    let load = Load::start(mesh.proxy.outbound, AUTHORITY, 2);
    load.wait_for("web-0 to serve", FOLLOW, |s| s.ok() > 0)
        .await
        .unwrap();
    assert_no_failures(&load, "service present");

    // Deleted: the name is unknown again. The proxy falls back to resolving it itself,
    // which fails for a cluster name outside a cluster: a clean 502, not a hang.
    api.delete(Kind::Service, NS, "web").unwrap();
    api.delete(Kind::EndpointSlice, NS, "web-abcde").unwrap();
    let failed = load
        .wait_for("requests to fail once the service is gone", FOLLOW, |s| {
            !s.failures.is_empty()
        })
        .await
        .unwrap();
    assert!(
        failed.failures[0].starts_with("502") || failed.failures[0].starts_with("503"),
        "a missing service is a 502 or 503 from the proxy: {:?}",
        failed.failures[0]
    );

    // Recreated: traffic comes back without restarting anything.
    api.apply(web_service("http")).unwrap();
    api.apply(web_slice(T, "http", p, &[(0, true)])).unwrap();
    let failures = load.stats().failures.len();
    let ok = load.stats().ok();
    load.wait_for(
        "web-0 to serve after the service is recreated",
        FOLLOW,
        |s| s.ok() > ok + 100,
    )
    .await
    .unwrap();
    // Requests that were already failing may end after the service came back, but once
    // the proxy knows it, the rest succeed.
    let settled = load.stats().failures.len();
    let ok = load.stats().ok();
    load.wait_for("steady traffic", FOLLOW, |s| s.ok() > ok + 300)
        .await
        .unwrap();
    assert_eq!(
        load.stats().failures.len(),
        settled,
        "no failures once the service is back (had {failures} while it was gone)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxies_ride_out_a_controller_restart() {
    const T: u8 = 3;
    let p = free_port();
    let backends = web_backends(T, 3, &[p]).await;
    let mut mesh = Mesh::start().await;
    create_web(&mesh, T, &backends, p);
    let api = &mesh.api;
    let load = Load::start(mesh.proxy.outbound, AUTHORITY, 2);
    load.wait_for("both endpoints to serve", FOLLOW, |s| {
        s.by_backend.len() == 2
    })
    .await
    .unwrap();

    // The controller goes away: the proxy keeps serving with what it knew.
    mesh.controller.process.kill();
    let ok = load.stats().ok();
    load.wait_for("traffic with the controller down", FOLLOW, |s| {
        s.ok() > ok + 500
    })
    .await
    .unwrap();
    assert_no_failures(&load, "controller down");

    // A change made during the outage reaches the proxy once a controller is back where
    // it was: the proxy reconnected and took the fresh state.
    api.apply(web_slice(T, "http", p, &[(0, true), (1, true), (2, true)]))
        .unwrap();
    let kubeconfig = api.kubeconfig_path().to_path_buf();
    let destination = mesh.controller.destination;
    mesh.controller =
        blocking(move || Controller::kubernetes(&kubeconfig, Some(destination))).await;
    load.wait_for("web-2 to serve after the controller restart", FOLLOW, |s| {
        s.by_backend.contains_key("web-2")
    })
    .await
    .unwrap();
    assert_no_failures(&load, "controller restart");
}
