//! ServiceProfiles through the controller, end to end: `GetProfile` streams a service's
//! profile from the `kubernetes` backend (the real kube-rs client watching
//! `serviceprofiles.mesh.rs` on the fake API server) and from the `file` backend, with
//! every change; an invalid update is refused and the last valid profile stays in force.
//!
//! Needs `mesh-controller` built (`cargo build --workspace --bins`).

use mesh_api::destination::{
    destination_client::DestinationClient, DestinationProfile, GetDestination,
};
use mesh_integration_tests::mesh::Controller;
use mesh_kube_fake::{service, service_profile, FakeKube, Kind, ServicePort};
use serde_json::json;
use std::time::Duration;

const FQN: &str = "web.default.svc.cluster.local";

/// A stream of `web`'s profile from the controller at `addr`.
async fn profiles(addr: std::net::SocketAddr) -> tonic::Streaming<DestinationProfile> {
    let mut client = DestinationClient::connect(format!("http://{addr}"))
        .await
        .expect("the controller serves");
    client
        .get_profile(GetDestination {
            path: format!("{FQN}:80"),
            context_token: String::new(),
        })
        .await
        .expect("GetProfile")
        .into_inner()
}

/// The next profile on the stream, within 20 s.
async fn next(stream: &mut tonic::Streaming<DestinationProfile>) -> DestinationProfile {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a profile update within 20s")
        .expect("the stream is healthy")
        .expect("the stream stays open")
}

fn route_names(p: &DestinationProfile) -> Vec<&str> {
    p.routes.iter().map(|r| r.name.as_str()).collect()
}

fn spec(route: &str, path_regex: &str) -> serde_json::Value {
    json!({
        "routes": [{
            "name": route,
            "condition": {"method": "GET", "pathRegex": path_regex},
            "isRetryable": true,
            "timeout": "300ms",
        }],
        "retryBudget": {"retryRatio": 0.5, "minRetriesPerSecond": 3, "ttl": "5s"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_profiles_stream_and_an_invalid_update_keeps_the_last_valid() {
    let kube = FakeKube::start().await.unwrap();
    kube.apply(service(
        "default",
        "web",
        "198.19.0.10",
        &[ServicePort::new("http", 80)],
    ))
    .unwrap();
    let ctl = tokio::task::spawn_blocking({
        let kubeconfig = kube.kubeconfig_path().to_path_buf();
        move || Controller::kubernetes(&kubeconfig, None)
    })
    .await
    .unwrap()
    .expect("the controller syncs, ServiceProfiles included");
    let mut stream = profiles(ctl.destination).await;

    // No profile yet: the default one (no routes, Linkerd's budget).
    let first = next(&mut stream).await;
    assert_eq!(first.fully_qualified_name, FQN);
    assert!(first.routes.is_empty());
    assert_eq!(first.retry_budget.unwrap().min_retries_per_second, 10);

    kube.apply(service_profile("default", FQN, spec("list", "/api/list")))
        .unwrap();
    let p = next(&mut stream).await;
    assert_eq!(route_names(&p), ["list"]);
    assert_eq!(p.routes[0].timeout_ms, 300);
    assert!(p.routes[0].is_retryable);
    assert_eq!(p.retry_budget.unwrap().ttl_ms, 5000);

    // An invalid regex: refused, nothing sent, the controller keeps serving "list";
    // the next valid update goes through.
    kube.apply(service_profile("default", FQN, spec("broken", "/api/(")))
        .unwrap();
    let stalled = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(
        stalled.is_err(),
        "no update for an invalid profile: {stalled:?}"
    );
    let mut again = profiles(ctl.destination).await;
    assert_eq!(route_names(&next(&mut again).await), ["list"]);
    kube.apply(service_profile("default", FQN, spec("vote", "/api/vote")))
        .unwrap();
    assert_eq!(route_names(&next(&mut stream).await), ["vote"]);

    // A profile that names a service of another namespace is invalid (client-side
    // profiles are not supported), so it changes nothing; deleting web's brings the
    // default back.
    kube.apply(service_profile("other", FQN, spec("x", "/x")))
        .unwrap();
    kube.delete(Kind::ServiceProfile, "default", FQN).unwrap();
    assert!(next(&mut stream).await.routes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_profiles_stream_and_an_invalid_file_keeps_the_last_valid() {
    let file = mesh_integration_tests::scratch_dir().join("profiles-discovery.yaml");
    let write = |route: &str, regex: &str| {
        let yaml = format!(
            "services:\n  - name: web\n    namespace: default\n    endpoints: [{{address: 127.0.0.1}}]\nprofiles:\n  - apiVersion: mesh.rs/v1alpha1\n    kind: ServiceProfile\n    metadata: {{name: {FQN}}}\n    spec:\n      routes: [{{name: {route}, condition: {{pathRegex: '{regex}'}}}}]\n"
        );
        std::fs::write(&file, yaml).unwrap();
    };
    write("list", "/api/list");
    let ctl = tokio::task::spawn_blocking({
        let file = file.clone();
        move || Controller::file(&file, None)
    })
    .await
    .unwrap()
    .unwrap();
    let mut stream = profiles(ctl.destination).await;
    assert_eq!(route_names(&next(&mut stream).await), ["list"]);

    write("broken", "/api/(");
    // The controller reports the file invalid (counted) and keeps what it had.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = ctl.metrics().unwrap();
        if m.sum("destination_file_loads_total", &[("result", "rejected")]) >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad file was never read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = profiles(ctl.destination).await;
    assert_eq!(route_names(&next(&mut again).await), ["list"]);
    write("vote", "/api/vote");
    assert_eq!(route_names(&next(&mut stream).await), ["vote"]);
}
