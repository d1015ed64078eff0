//! The controller's Kubernetes backend when the API server misbehaves as real ones do
//! (issue 13, item 8), on the fake API server with its faults switched on:
//!
//! - the ServiceProfile CRD not installed: the controller is ready anyway, answers
//!   endpoint lookups and the default profile, says so on `/metrics`, and reads profiles
//!   once the CRD is served, without a restart;
//! - an outage long enough to build the watches' backoff up, after which the API server
//!   has compacted their history: the 410 that follows re-lists at once, not after the
//!   backoff the outage built; restarts are counted once per restart, failures apart.
//!
//! Needs `mesh-controller` built (`cargo build --workspace --bins`).

use mesh_api::destination::{
    destination_client::DestinationClient, update::Update as Kind_, DestinationProfile,
    GetDestination, Update,
};
use mesh_integration_tests::{
    mesh::{scrape, Controller},
    wait_until,
};
use mesh_kube_fake::{
    endpoint_slice, pod, service, service_profile, Endpoint, FakeKube, Kind, ServicePort,
};
use serde_json::json;
use std::{net::SocketAddr, time::Duration};

const NS: &str = "default";
const FQN: &str = "web.default.svc.cluster.local";

/// `web` with its endpoints at `127.78.<test>.<i>`, `i` in `pods`, port 8080.
fn web(kube: &FakeKube, test: u8, pods: &[u8]) {
    let ip = |i: u8| format!("127.78.{test}.{i}");
    let endpoints: Vec<Endpoint> = pods
        .iter()
        .map(|&i| Endpoint::new(&ip(i), true).pod(&format!("web-{i}")))
        .collect();
    let mut objects = vec![
        service(
            NS,
            "web",
            "198.19.0.10",
            &[ServicePort::new("http", 80).target(8080)],
        ),
        endpoint_slice(NS, "web-abcde", "web", &[("http", 8080)], &endpoints),
    ];
    objects.extend(pods.iter().map(|&i| {
        pod(
            NS,
            &format!("web-{i}"),
            &ip(i),
            "web",
            None,
            &[("app", "web")],
        )
    }));
    kube.apply_all(objects).unwrap();
}

async fn client(addr: SocketAddr) -> DestinationClient<tonic::transport::Channel> {
    DestinationClient::connect(format!("http://{addr}"))
        .await
        .expect("the controller serves")
}

fn get(path: &str) -> GetDestination {
    GetDestination {
        path: path.to_string(),
        context_token: String::new(),
    }
}

/// The next message of a stream within `within`.
async fn next<T>(stream: &mut tonic::Streaming<T>, within: Duration, what: &str) -> T {
    tokio::time::timeout(within, stream.message())
        .await
        .unwrap_or_else(|_| panic!("{what} within {within:?}"))
        .expect("the stream is healthy")
        .expect("the stream stays open")
}

/// The addresses an `Add` update brings.
fn added(update: &Update) -> Vec<SocketAddr> {
    match &update.update {
        Some(Kind_::Add(set)) => set
            .endpoints
            .iter()
            .filter_map(|e| e.addr.as_ref().and_then(|a| a.try_into().ok()))
            .collect(),
        other => panic!("expected an Add, got {other:?}"),
    }
}

fn route_names(p: &DestinationProfile) -> Vec<&str> {
    p.routes.iter().map(|r| r.name.as_str()).collect()
}

/// A metric of the controller at `admin` (0 when absent).
fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
    Ok(scrape(admin)?.sum(name, labels))
}

/// Waits (off the runtime's threads) until `check` holds for the controller's metrics.
async fn wait_metric(
    admin: SocketAddr,
    what: &'static str,
    within: Duration,
    check: impl Fn(&mesh_integration_tests::Metrics) -> bool + Send + 'static,
) {
    tokio::task::spawn_blocking(move || {
        wait_until(what, within, || {
            let m = scrape(admin)?;
            Ok(check(&m).then_some(()))
        })
    })
    .await
    .expect("the wait ran")
    .unwrap();
}

async fn start_controller(kube: &FakeKube) -> Controller {
    let kubeconfig = kube.kubeconfig_path().to_path_buf();
    tokio::task::spawn_blocking(move || Controller::kubernetes(&kubeconfig, None))
        .await
        .expect("the start ran")
        .expect("the controller becomes ready")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_without_the_profile_crd_and_profiles_once_it_is_served() {
    let kube = FakeKube::start().await.unwrap();
    kube.set_served(Kind::ServiceProfile, false);
    web(&kube, 1, &[1]);

    // Ready although ServiceProfiles answer 404.
    let ctl = start_controller(&kube).await;
    let mut destinations = client(ctl.destination).await;
    let mut endpoints = destinations
        .get(get(&format!("{FQN}:80")))
        .await
        .expect("Get")
        .into_inner();
    let first = next(&mut endpoints, Duration::from_secs(5), "web's endpoints").await;
    assert_eq!(added(&first), ["127.78.1.1:8080".parse().unwrap()]);

    // GetProfile answers the default at once: no profiles without their CRD.
    let asked = tokio::time::Instant::now();
    let mut profiles = destinations
        .get_profile(get(&format!("{FQN}:80")))
        .await
        .expect("GetProfile")
        .into_inner();
    let default = next(&mut profiles, Duration::from_secs(2), "the default profile").await;
    assert!(default.routes.is_empty(), "{default:?}");
    assert_eq!(default.fully_qualified_name, FQN);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        metric(ctl.admin, "serviceprofile_crd_installed", &[]).unwrap(),
        0.0
    );
    let log = ctl.process.stderr();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the ServiceProfile CRD is not installed"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning, however many retries: {log}"
    );
    assert!(
        warnings[0].contains("WARN")
            && warnings[0].contains("mesh install --crds | kubectl apply -f -"),
        "{}",
        warnings[0]
    );

    // The CRD installed and a profile applied: picked up without a restart.
    kube.set_served(Kind::ServiceProfile, true);
    kube.apply(service_profile(
        NS,
        FQN,
        json!({"routes": [{"name": "list", "condition": {"method": "GET", "pathRegex": "/list"}}]}),
    ))
    .unwrap();
    let profile = next(
        &mut profiles,
        mesh_controller_crd_retry() + Duration::from_secs(10),
        "the profile once its CRD is served",
    )
    .await;
    assert_eq!(route_names(&profile), ["list"]);
    assert_eq!(
        metric(ctl.admin, "serviceprofile_crd_installed", &[]).unwrap(),
        1.0
    );

    // The CRD deleted again (its objects go with it on a real API server): back to the
    // default, at once (the open watch ends, the next one is a 404).
    kube.set_served(Kind::ServiceProfile, false);
    let default = next(
        &mut profiles,
        Duration::from_secs(5),
        "the default profile once the CRD is gone",
    )
    .await;
    assert!(default.routes.is_empty(), "{default:?}");
    assert_eq!(
        metric(ctl.admin, "serviceprofile_crd_installed", &[]).unwrap(),
        0.0
    );

    // Endpoints were never disturbed.
    let quiet = tokio::time::timeout(Duration::from_millis(200), endpoints.message()).await;
    assert!(quiet.is_err(), "no endpoint update: {quiet:?}");
}

/// The controller's `k8s::CRD_RETRY` (the tests run its binary, not its library).
fn mesh_controller_crd_retry() -> Duration {
    Duration::from_secs(5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_after_an_outage_relists_at_once() {
    let kube = FakeKube::start().await.unwrap();
    web(&kube, 2, &[1]);
    let ctl = start_controller(&kube).await;
    let admin = ctl.admin;
    let mut destinations = client(ctl.destination).await;
    let mut endpoints = destinations
        .get(get(&format!("{FQN}:80")))
        .await
        .expect("Get")
        .into_inner();
    let first = next(&mut endpoints, Duration::from_secs(5), "web's endpoints").await;
    assert_eq!(added(&first), ["127.78.2.1:8080".parse().unwrap()]);
    let slices = [("resource", "endpointslices")];
    let failed_before = metric(admin, "destination_watch_failures_total", &slices).unwrap();

    // An outage: every watch cut, every request 503, until the slices' watch has failed
    // four times in a row (its backoff is then 6.4 s).
    kube.set_unavailable(true);
    wait_metric(
        admin,
        "four failed watch starts",
        Duration::from_secs(30),
        move |m| m.sum("destination_watch_failures_total", &slices) >= failed_before + 4.0,
    )
    .await;
    // The API server comes back having compacted its history (a long outage), and a
    // pod was added meanwhile: only a re-list can bring it.
    kube.expire();
    web(&kube, 2, &[1, 2]);
    let failed_outage = metric(admin, "destination_watch_failures_total", &slices).unwrap();
    kube.set_unavailable(false);

    // The retry under way when the API server came back ends; the watch it starts gets
    // the 410 (one more failure): from then on, the re-list is at once.
    let gone_at = tokio::task::spawn_blocking(move || {
        wait_until(
            "the slices' watch to get its 410",
            Duration::from_secs(40),
            || {
                let failures = metric(admin, "destination_watch_failures_total", &slices)?;
                Ok((failures > failed_outage).then(tokio::time::Instant::now))
            },
        )
    })
    .await
    .unwrap()
    .unwrap();
    let update = next(
        &mut endpoints,
        Duration::from_secs(40),
        "the pod added during the outage",
    )
    .await;
    let relisted = gone_at.elapsed();
    eprintln!("the pod added during the outage seen {relisted:?} after the 410 was counted (polled every 20 ms)");
    assert_eq!(added(&update), ["127.78.2.2:8080".parse().unwrap()]);
    assert!(
        relisted < Duration::from_secs(1),
        "the re-list after the 410 took {relisted:?}: it waited out the outage's backoff"
    );

    // One restart of the slices' watch (the 410's re-list), not one per failed try.
    let restarts = metric(admin, "destination_watch_restarts_total", &slices).unwrap();
    assert_eq!(restarts, 1.0, "restarts of the slices' watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_lists_before_the_first_sync_are_no_restarts() {
    let kube = FakeKube::start().await.unwrap();
    web(&kube, 3, &[1]);
    kube.set_unavailable(true);
    let kubeconfig = kube.kubeconfig_path().to_path_buf();
    let starting = tokio::task::spawn_blocking(move || Controller::kubernetes(&kubeconfig, None));
    // Every watch's list refused twice at least (the fake counts its 503s): nine
    // watches, the four of discovery and the five policy kinds'.
    kube.wait_for_stats("18 refused lists", Duration::from_secs(30), |s| {
        s.unavailable >= 18
    })
    .await
    .unwrap();
    assert_eq!(kube.stats().lists, 0, "no list was answered");
    kube.set_unavailable(false);
    let ctl = starting
        .await
        .unwrap()
        .expect("ready once the API server answers");
    let m = scrape(ctl.admin).unwrap();
    for resource in ["services", "endpointslices", "pods", "serviceprofiles"] {
        let labels = [("resource", resource)];
        assert_eq!(
            m.sum("destination_watch_restarts_total", &labels),
            0.0,
            "{resource}: lists that failed before any sync are no restarts"
        );
        assert!(
            m.sum("destination_watch_failures_total", &labels) >= 1.0,
            "{resource}: the failed lists are counted as failures: {}",
            m.show("destination_watch_failures_total", &labels)
        );
    }
}
