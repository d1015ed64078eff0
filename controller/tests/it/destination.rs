//! Component tests: the whole controller in-process (file backend, gRPC server on
//! loopback) driven by the real tonic `DestinationClient`.

use mesh_api::destination::{
    destination_client::DestinationClient, update::Update as Kind, GetDestination, Update,
};
use mesh_controller::{metrics::StreamKind, Config, Running};
use std::{
    collections::BTreeSet,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::time::{timeout, Instant};
use tonic::{transport::Channel, Code, Streaming};

const DEADLINE: Duration = Duration::from_secs(15);

struct Controller {
    running: Option<Running>,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Controller {
    async fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("discovery.yaml");
        write(&file, yaml);
        let config = Config::local(file.clone());
        let running = config.build().await.unwrap();
        let ready = wait_until("the index is ready", || running.index.is_ready());
        ready.await;
        Self {
            running: Some(running),
            file,
            _dir: dir,
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    async fn client(&self) -> DestinationClient<Channel> {
        client(self.running().destination_addr, None).await
    }

    /// Writes the file and waits until the controller applied it.
    async fn edit(&self, yaml: &str) {
        let before = self.running().metrics.file_loads(true);
        write(&self.file, yaml);
        let metrics = &self.running().metrics;
        wait_until("the edit to apply", || metrics.file_loads(true) > before).await;
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.shutdown();
        }
    }
}

async fn client(addr: SocketAddr, stream_window: Option<u32>) -> DestinationClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(stream_window)
        .connect()
        .await
        .unwrap();
    DestinationClient::new(channel)
}

/// Replaces the file atomically, as editors and `mesh demo` do.
fn write(path: &Path, yaml: &str) {
    let mut tmp = tempfile::NamedTempFile::new_in(path.parent().unwrap()).unwrap();
    tmp.write_all(yaml.as_bytes()).unwrap();
    tmp.persist(path).unwrap();
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn get(path: &str) -> GetDestination {
    GetDestination {
        path: path.to_string(),
        context_token: r#"{"ns":"demo"}"#.to_string(),
    }
}

async fn open(client: &mut DestinationClient<Channel>, path: &str) -> Streaming<Update> {
    client.get(get(path)).await.unwrap().into_inner()
}

async fn next(stream: &mut Streaming<Update>) -> Kind {
    let msg = timeout(DEADLINE, stream.message())
        .await
        .expect("an update in time")
        .expect("a healthy stream")
        .expect("an open stream");
    msg.update.expect("an update kind")
}

fn added(kind: &Kind) -> BTreeSet<String> {
    match kind {
        Kind::Add(add) => add
            .endpoints
            .iter()
            .map(|e| {
                SocketAddr::try_from(e.addr.as_ref().unwrap())
                    .unwrap()
                    .to_string()
            })
            .collect(),
        other => panic!("expected Add, got {other:?}"),
    }
}

fn removed(kind: &Kind) -> BTreeSet<String> {
    match kind {
        Kind::Remove(rm) => rm
            .addrs
            .iter()
            .map(|a| SocketAddr::try_from(a).unwrap().to_string())
            .collect(),
        other => panic!("expected Remove, got {other:?}"),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn web(endpoints: &[&str]) -> String {
    let mut yaml = String::from("services:\n  - name: web\n    namespace: demo\n    ports: [{port: 80, targetPort: 8080}]\n    endpoints:\n");
    if endpoints.is_empty() {
        yaml = yaml.replace("    endpoints:\n", "    endpoints: []\n");
    }
    for ep in endpoints {
        yaml.push_str(&format!(
            "      - {{address: {ep}, labels: {{pod: web-{}, deployment: web, serviceaccount: web}}, identity: web.demo.serviceaccount.identity.mesh.cluster.local}}\n",
            ep.replace('.', "-")
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_state_then_deltas() {
    let ctl = Controller::start(&web(&["198.18.0.1", "198.18.0.2"])).await;
    let mut client = ctl.client().await;
    // The short form, expanded with the context token's namespace.
    let mut stream = open(&mut client, "web:80").await;

    let first = next(&mut stream).await;
    assert_eq!(added(&first), set(&["198.18.0.1:8080", "198.18.0.2:8080"]));
    let Kind::Add(add) = &first else {
        unreachable!()
    };
    assert_eq!(
        add.metric_labels.get("namespace").map(String::as_str),
        Some("demo")
    );
    assert_eq!(
        add.metric_labels.get("service").map(String::as_str),
        Some("web")
    );
    let ep = &add.endpoints[0];
    assert_eq!(ep.weight, 10_000);
    assert_eq!(
        ep.metric_labels.get("pod").map(String::as_str),
        Some("web-198-18-0-1")
    );
    assert_eq!(
        ep.metric_labels.get("deployment").map(String::as_str),
        Some("web")
    );
    assert_eq!(
        ep.metric_labels.get("serviceaccount").map(String::as_str),
        Some("web")
    );
    let id = ep
        .tls_identity
        .as_ref()
        .expect("meshed endpoints carry an identity");
    assert_eq!(
        id.name,
        "web.demo.serviceaccount.identity.mesh.cluster.local"
    );
    assert_eq!(id.uri, "spiffe://cluster.local/ns/demo/sa/web");
    assert!(matches!(
        ep.protocol_hint.as_ref().and_then(|h| h.protocol.as_ref()),
        Some(mesh_api::destination::protocol_hint::Protocol::H2(_))
    ));

    // One endpoint replaced: only the delta travels.
    ctl.edit(&web(&["198.18.0.2", "198.18.0.3"])).await;
    assert_eq!(removed(&next(&mut stream).await), set(&["198.18.0.1:8080"]));
    assert_eq!(added(&next(&mut stream).await), set(&["198.18.0.3:8080"]));

    // Known and empty, then unknown.
    ctl.edit(&web(&[])).await;
    assert_eq!(
        next(&mut stream).await,
        Kind::NoEndpoints(mesh_api::destination::NoEndpoints { exists: true })
    );
    ctl.edit("services: []\n").await;
    assert_eq!(
        next(&mut stream).await,
        Kind::NoEndpoints(mesh_api::destination::NoEndpoints { exists: false })
    );

    // And back: the stream follows a service that comes (again).
    ctl.edit(&web(&["198.18.0.4"])).await;
    assert_eq!(added(&next(&mut stream).await), set(&["198.18.0.4:8080"]));
    assert!(ctl.running().metrics.updates_sent() >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_then_created() {
    let ctl = Controller::start("services: []\n").await;
    let mut client = ctl.client().await;
    let mut by_name = open(&mut client, "web.demo.svc.cluster.local:80").await;
    let mut by_ip = open(&mut client, "198.19.0.10:80").await;
    let mut outside = open(&mut client, "example.com:443").await;
    let unknown = Kind::NoEndpoints(mesh_api::destination::NoEndpoints { exists: false });
    assert_eq!(next(&mut by_name).await, unknown);
    assert_eq!(next(&mut by_ip).await, unknown);
    assert_eq!(next(&mut outside).await, unknown);

    ctl.edit(&web(&["198.18.0.1"]).replace(
        "namespace: demo\n",
        "namespace: demo\n    clusterIPs: [198.19.0.10]\n",
    ))
    .await;
    assert_eq!(added(&next(&mut by_name).await), set(&["198.18.0.1:8080"]));
    assert_eq!(added(&next(&mut by_ip).await), set(&["198.18.0.1:8080"]));

    // A pod address: the single endpoint with its pod's labels and identity.
    let mut pod = open(&mut client, "198.18.0.1:9000").await;
    let first = next(&mut pod).await;
    assert_eq!(added(&first), set(&["198.18.0.1:9000"]));
    let Kind::Add(add) = first else {
        unreachable!()
    };
    assert!(add.endpoints[0].tls_identity.is_some());
    assert_eq!(
        add.metric_labels.get("namespace").map(String::as_str),
        Some("demo")
    );
    assert_eq!(add.metric_labels.get("service"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_are_invalid_arguments() {
    let ctl = Controller::start("services: []\n").await;
    let mut client = ctl.client().await;
    for (path, needle) in [
        ("", "empty"),
        ("web:http", "invalid port \"http\""),
        ("we_b.demo:80", "invalid DNS label"),
    ] {
        let status = client.get(get(path)).await.expect_err(path);
        assert_eq!(status.code(), Code::InvalidArgument, "{path}");
        assert!(
            status.message().contains(needle),
            "{path}: {}",
            status.message()
        );
        let status = client.get_profile(get(path)).await.expect_err(path);
        assert_eq!(status.code(), Code::InvalidArgument, "{path}");
    }
    assert_eq!(ctl.running().metrics.streams(StreamKind::Get), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_edit_keeps_the_last_good_state() {
    let ctl = Controller::start(&web(&["198.18.0.1"])).await;
    let mut client = ctl.client().await;
    let mut stream = open(&mut client, "web.demo:80").await;
    assert_eq!(added(&next(&mut stream).await), set(&["198.18.0.1:8080"]));

    let metrics = &ctl.running().metrics;
    write(
        &ctl.file,
        &web(&["198.18.0.2"]).replace("address:", "adress:"),
    );
    wait_until("the bad edit to be rejected", || {
        metrics.file_loads(false) == 1
    })
    .await;

    // Nothing was sent, and a new stream still gets the old endpoints.
    assert!(timeout(Duration::from_millis(300), stream.message())
        .await
        .is_err());
    let mut fresh = open(&mut client, "web.demo:80").await;
    assert_eq!(added(&next(&mut fresh).await), set(&["198.18.0.1:8080"]));
    assert!(ctl.running().index.is_ready());

    // The next good edit applies to both.
    ctl.edit(&web(&["198.18.0.3"])).await;
    for s in [&mut stream, &mut fresh] {
        assert_eq!(removed(&next(s).await), set(&["198.18.0.1:8080"]));
        assert_eq!(added(&next(s).await), set(&["198.18.0.3:8080"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_streams_all_get_updates() {
    const STREAMS: usize = 500;
    let ctl = Controller::start(&web(&["198.18.0.1"])).await;
    // A few connections, as several proxies would have; each carries many streams.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(ctl.client().await);
    }
    let mut streams = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        // Half of them ask the same question in other words; all share one query.
        let path = if i % 2 == 0 {
            "web.demo.svc.cluster.local:80"
        } else {
            "web:80"
        };
        let n = clients.len();
        streams.push(open(&mut clients[i % n], path).await);
    }
    for s in &mut streams {
        assert_eq!(added(&next(s).await), set(&["198.18.0.1:8080"]));
    }
    let metrics = ctl.running().metrics.clone();
    assert_eq!(metrics.streams(StreamKind::Get), STREAMS as i64);
    assert_eq!(ctl.running().index.stats().queries, 1);

    ctl.edit(&web(&["198.18.0.1", "198.18.0.2"])).await;
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut s| tokio::spawn(async move { added(&next(&mut s).await) }))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), set(&["198.18.0.2:8080"]));
    }
    // The streams were dropped with their tasks: the gauge and the index follow.
    wait_until("streams to close", || metrics.streams(StreamKind::Get) == 0).await;
    let index = ctl.running().index.clone();
    wait_until("the query to be dropped", || index.stats().queries == 0).await;
}

/// A service with many endpoints and labels, so that each full update is large.
fn big(round: usize, endpoints: usize) -> String {
    let mut yaml = String::from("services:\n  - name: big\n    namespace: demo\n    endpoints:\n");
    for i in 0..endpoints {
        // Every round moves every endpoint to another port: each round is a full
        // Remove + Add of everything.
        yaml.push_str(&format!(
            "      - {{address: \"198.18.{}.{}:{}\", labels: {{pod: big-{i}-with-a-long-pod-name-suffix, deployment: big-deployment}}}}\n",
            i / 250,
            i % 250,
            10_000 + round
        ));
    }
    yaml.push_str(&format!(
        "  - name: small\n    namespace: demo\n    endpoints: [{{address: \"198.19.200.{}:80\"}}]\n",
        round + 1
    ));
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_blocks_no_one_and_coalesces() {
    const ENDPOINTS: usize = 1000;
    const ROUNDS: usize = 12;
    let ctl = Controller::start(&big(0, ENDPOINTS)).await;
    let addr = ctl.running().destination_addr;

    // The slow client has its own connection (another proxy) with a small window, so
    // the server soon cannot send it anything more.
    let mut slow_client = client(addr, Some(16 * 1024)).await;
    let mut slow = open(&mut slow_client, "big.demo:80").await;
    let mut fast_client = ctl.client().await;
    let mut fast_big = open(&mut fast_client, "big.demo:80").await;
    let mut fast_small = open(&mut fast_client, "small.demo:80").await;
    assert_eq!(added(&next(&mut fast_big).await).len(), ENDPOINTS);
    assert_eq!(
        added(&next(&mut fast_small).await),
        set(&["198.19.200.1:80"])
    );

    for round in 1..=ROUNDS {
        ctl.edit(&big(round, ENDPOINTS)).await;
        // Every other stream keeps up, round after round, while `slow` reads nothing.
        assert_eq!(removed(&next(&mut fast_big).await).len(), ENDPOINTS);
        assert_eq!(added(&next(&mut fast_big).await).len(), ENDPOINTS);
        assert_eq!(
            removed(&next(&mut fast_small).await),
            set(&[&format!("198.19.200.{round}:80")])
        );
        assert_eq!(
            added(&next(&mut fast_small).await),
            set(&[&format!("198.19.200.{}:80", round + 1)])
        );
    }

    // The slow client finally reads: it ends at the newest state, having received far
    // fewer messages than the 1 + 2 * ROUNDS the others did.
    let want: BTreeSet<String> = (0..ENDPOINTS)
        .map(|i| format!("198.18.{}.{}:{}", i / 250, i % 250, 10_000 + ROUNDS))
        .collect();
    let mut view = BTreeSet::new();
    let mut messages = 0;
    while view != want {
        match next(&mut slow).await {
            kind @ Kind::Add(_) => view.extend(added(&kind)),
            kind @ Kind::Remove(_) => {
                for a in removed(&kind) {
                    assert!(view.remove(&a), "removed {a} it never had");
                }
            }
            other => panic!("unexpected {other:?}"),
        }
        messages += 1;
        assert!(messages <= 1 + 2 * ROUNDS, "no coalescing");
    }
    assert!(
        messages < ROUNDS,
        "a slow stream should coalesce updates, got {messages} messages for {ROUNDS} rounds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles() {
    let ctl = Controller::start(
        "services:\n  - name: db\n    namespace: demo\n    opaquePorts: [5432]\n    ports: [{port: 5432}]\n    endpoints: [{address: 198.18.0.5, labels: {pod: db-0}}]\n",
    )
    .await;
    let mut client = ctl.client().await;
    let mut svc = client
        .get_profile(get("db.demo:5432"))
        .await
        .unwrap()
        .into_inner();
    let p = timeout(DEADLINE, svc.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(p.fully_qualified_name, "db.demo.svc.cluster.local");
    assert!(p.opaque_protocol);
    let budget = p.retry_budget.expect("a default retry budget");
    assert_eq!(
        (
            budget.retry_ratio,
            budget.min_retries_per_second,
            budget.ttl_ms
        ),
        (0.2, 10, 10_000)
    );
    assert_eq!(ctl.running().metrics.streams(StreamKind::Profile), 1);

    let mut pod = client
        .get_profile(get("198.18.0.5:5432"))
        .await
        .unwrap()
        .into_inner();
    let p = timeout(DEADLINE, pod.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(p.fully_qualified_name, "");
    let ep = p
        .endpoint
        .expect("a pod address profile names its endpoint");
    assert_eq!(
        ep.metric_labels.get("pod").map(String::as_str),
        Some("db-0")
    );

    let mut unknown = client
        .get_profile(get("nope.demo:80"))
        .await
        .unwrap()
        .into_inner();
    let p = timeout(DEADLINE, unknown.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(p, Default::default());

    // A change that matters to the profile re-sends it; one that does not, does not.
    ctl.edit("services:\n  - name: db\n    namespace: demo\n    ports: [{port: 5432}]\n    endpoints: [{address: 198.18.0.6, labels: {pod: db-0}}]\n")
        .await;
    let p = timeout(DEADLINE, svc.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!p.opaque_protocol);
    ctl.edit("services:\n  - name: db\n    namespace: demo\n    ports: [{port: 5432}]\n    endpoints: [{address: 198.18.0.7, labels: {pod: db-0}}]\n")
        .await;
    // The new endpoint does not change the service's profile.
    assert!(timeout(Duration::from_millis(300), svc.message())
        .await
        .is_err());
    assert!(timeout(Duration::from_millis(10), unknown.message())
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams() {
    let mut ctl = Controller::start(&web(&["198.18.0.1"])).await;
    let mut client = ctl.client().await;
    let mut stream = open(&mut client, "web.demo:80").await;
    next(&mut stream).await;
    let running = ctl.running.take().unwrap();
    running.shutdown();
    let end = timeout(DEADLINE, stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    timeout(DEADLINE, running.wait())
        .await
        .expect("the server drains")
        .unwrap();
}

/// Before its first full sync the controller knows nothing, so answering "unknown"
/// would make a proxy that reconnects after a controller restart drop endpoints it
/// rightly knew. A stream opened then gets its first answer only after the sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_wait_for_the_first_sync() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.yaml");
    let config = Config::local(file.clone());
    let running = config.build().await.unwrap();
    assert!(!running.index.is_ready(), "no file yet, so no sync");
    let mut client = client(running.destination_addr, None).await;
    let first = async {
        let mut stream = open(&mut client, "web.demo:80").await;
        next(&mut stream).await
    };
    tokio::pin!(first);
    // A synced controller answers in milliseconds; this one must not answer at all.
    assert!(
        timeout(Duration::from_millis(300), &mut first)
            .await
            .is_err(),
        "an unsynced controller answered"
    );
    write(&file, &web(&["198.18.0.1"]));
    assert_eq!(added(&first.await), set(&["198.18.0.1:8080"]));
    running.shutdown();
}
