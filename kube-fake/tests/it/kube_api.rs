//! The fake Kubernetes API server (`mesh_kube_fake`), driven by the real
//! kube-rs client and `kube::runtime::watcher` over HTTP: if these pass, a controller
//! built on kube-rs sees from the fake what it would see from a cluster, including the
//! rare paths (compaction, 410 Gone, re-lists) a cluster cannot be made to take on cue.
//!
//! Every wait is on an event or a counter, with a deadline; nothing sleeps.

use std::{fmt::Debug, time::Duration};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use futures_util::{stream::BoxStream, Stream, StreamExt as _};
use k8s_openapi::{
    api::{
        core::v1::{Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    api::{Api, ListParams, WatchEvent, WatchParams},
    runtime::watcher::{self, Event},
    Resource, ResourceExt as _,
};
use mesh_kube_fake::{endpoint_slice, pod, service, Endpoint, FakeKube, Kind, ServicePort};

/// How long any one awaited event may take. Events arrive in milliseconds; this only
/// bounds a failing test.
const DEADLINE: Duration = Duration::from_secs(10);

fn web_service(ns: &str, name: &str) -> serde_json::Value {
    service(
        ns,
        name,
        "198.19.0.10",
        &[ServicePort::new("http", 80).target(8080)],
    )
}

fn web_pod(ns: &str, name: &str, app: &str) -> serde_json::Value {
    pod(
        ns,
        name,
        "198.18.0.1",
        "web",
        Some(("ReplicaSet", "web-7d4b9c")),
        &[("app", app)],
    )
}

/// The next item of `stream`, failing the test if it takes longer than `DEADLINE` or the
/// stream ends.
async fn next<T>(stream: &mut (impl Stream<Item = T> + Unpin), what: &str) -> T {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("stream ended while waiting for {what}"))
}

type Watcher<K> = BoxStream<'static, watcher::Result<Event<K>>>;

fn watch<K>(api: Api<K>, config: watcher::Config) -> Watcher<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, config).boxed()
}

/// The watcher's next events, rendered as `Init`, `InitApply(name)`, `Apply(name)`, ….
async fn events<K: Resource>(w: &mut Watcher<K>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        match next(w, "a watcher event").await {
            Ok(event) => out.push(event.to_string()),
            Err(e) => panic!("watcher error after {out:?}: {e}"),
        }
    }
    out
}

fn rv<K: Resource>(obj: &K) -> u64 {
    obj.resource_version()
        .expect("served objects have a resourceVersion")
        .parse()
        .expect("resourceVersions are numbers here")
}

#[tokio::test]
async fn lists_page_through_a_consistent_snapshot() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    api.apply_all((0..7).map(|i| web_service("shop", &format!("svc-{i}"))))?;
    let services: Api<Service> = Api::all(api.client()?);

    let first = services.list(&ListParams::default().limit(3)).await?;
    let snapshot_rv = first.metadata.resource_version.clone();
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let mut names: Vec<String> = first.items.iter().map(|s| s.name_any()).collect();
    let mut token = first.metadata.continue_;

    // Changes after the first page must not leak into the later ones: the list is the
    // state at the first page's resourceVersion.
    api.delete(Kind::Service, "shop", "svc-5")
        .expect("svc-5 exists");
    api.apply(web_service("shop", "svc-50"))?;

    let mut pages = 1;
    while let Some(t) = token {
        let page = services
            .list(&ListParams::default().limit(3).continue_token(&t))
            .await?;
        assert_eq!(page.metadata.resource_version, snapshot_rv);
        names.extend(page.items.iter().map(|s| s.name_any()));
        token = page.metadata.continue_;
        pages += 1;
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..7).map(|i| format!("svc-{i}")).collect();
    assert_eq!(names, want, "every object exactly once, in key order");

    let now = services.list(&ListParams::default()).await?;
    let now: Vec<String> = now.items.iter().map(|s| s.name_any()).collect();
    assert_eq!(
        now,
        ["svc-0", "svc-1", "svc-2", "svc-3", "svc-4", "svc-50", "svc-6"]
    );
    assert_eq!(api.stats().lists, 4);
    Ok(())
}

#[tokio::test]
async fn the_watcher_pages_a_large_initial_list() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    let pods: Vec<_> = (0..1200)
        .map(|i| {
            pod(
                "load",
                &format!("pod-{i:04}"),
                "198.18.100.1",
                "sa",
                None,
                &[],
            )
        })
        .collect();
    api.apply_all(pods)?;
    // The default watcher::Config lists in pages of 500, like client-go.
    let mut w = watch(Api::<Pod>::all(api.client()?), watcher::Config::default());
    assert_eq!(events(&mut w, 1).await, ["Init"]);
    let applied = events(&mut w, 1200).await;
    assert!(applied.iter().all(|e| e.starts_with("InitApply(pod-")));
    assert_eq!(events(&mut w, 1).await, ["InitDone"]);
    assert_eq!(api.stats().lists, 3);
    Ok(())
}

#[tokio::test]
async fn the_watcher_sees_applies_modifications_and_deletes_in_order() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    let a = api.apply(web_pod("shop", "a", "web"))?;
    let pods: Api<Pod> = Api::namespaced(api.client()?, "shop");
    let mut w = watch(pods, watcher::Config::default());
    assert_eq!(
        events(&mut w, 3).await,
        ["Init", "InitApply(a)", "InitDone"]
    );

    let created = api.apply(web_pod("shop", "b", "web"))?;
    let modified = api.apply(web_pod("shop", "b", "web-v2"))?;
    // Another namespace's pod must not reach a namespaced watch.
    api.apply(web_pod("elsewhere", "b", "web"))?;
    let deleted = api.delete(Kind::Pod, "shop", "b").expect("b exists");

    let mut seen = Vec::new();
    for want in ["Apply(b)", "Apply(b)", "Delete(b)"] {
        let event = next(&mut w, want).await?;
        assert_eq!(event.to_string(), want);
        if let Event::Apply(p) | Event::Delete(p) = event {
            seen.push((rv(&p), p.labels()["app"].clone()));
        }
    }
    assert_eq!(
        seen,
        [
            (created, "web".to_owned()),
            (modified, "web-v2".to_owned()),
            // A deletion carries the last state, at the deletion's resourceVersion.
            (deleted, "web-v2".to_owned()),
        ]
    );
    assert!(created < modified && modified < deleted);

    // Writing an identical object is no change: no event, no new resourceVersion.
    let before = api.resource_version();
    assert_eq!(api.apply(web_pod("shop", "a", "web"))?, a);
    assert_eq!(api.resource_version(), before);
    let c = api.apply(web_pod("shop", "c", "web"))?;
    assert_eq!(c, before + 1);
    // The next event is c's: a's rewrite sent nothing.
    assert_eq!(events(&mut w, 1).await, ["Apply(c)"]);
    Ok(())
}

#[tokio::test]
async fn bookmarks_arrive_and_advance_the_resource_version() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    api.set_bookmark_interval(Duration::from_millis(50));
    let pods: Api<Pod> = Api::all(api.client()?);
    let from = api.resource_version();
    let mut stream = pods
        .watch(&WatchParams::default(), &from.to_string())
        .await?
        .boxed();

    // A write to another kind moves the global resourceVersion without a pod event; the
    // pod watch's bookmarks must follow it, so a re-watch starts past it.
    let elsewhere = api.apply(web_service("shop", "web"))?;
    loop {
        match next(&mut stream, "a bookmark past the service write").await? {
            WatchEvent::Bookmark(b) => {
                assert_eq!(b.types.kind, "Pod");
                let at: u64 = b.metadata.resource_version.parse()?;
                assert!(at >= from);
                if at >= elsewhere {
                    break;
                }
            }
            other => panic!("expected only bookmarks, got {other:?}"),
        }
    }

    // The watcher asks for bookmarks, and takes their resourceVersion as its own.
    let mut w = watch(pods, watcher::Config::default());
    assert_eq!(events(&mut w, 2).await, ["Init", "InitDone"]);
    let before = api.stats().bookmarks;
    let drive = tokio::spawn(async move { while w.next().await.is_some() {} });
    api.wait_for_stats("bookmarks on the watcher's watch", DEADLINE, |s| {
        s.bookmarks >= before + 2
    })
    .await?;
    drive.abort();
    Ok(())
}

#[tokio::test]
async fn expire_forces_a_relist_without_objects_deleted_meanwhile() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    let slice = |name: &str, ip: &str| {
        endpoint_slice(
            "shop",
            name,
            "web",
            &[("http", 8080)],
            &[Endpoint::new(ip, true).pod(&format!("{name}-pod"))],
        )
    };
    api.apply_all([slice("web-a", "198.18.0.1"), slice("web-b", "198.18.0.2")])?;
    let mut w = watch(
        Api::<EndpointSlice>::all(api.client()?),
        watcher::Config::default(),
    );
    assert_eq!(
        events(&mut w, 4).await,
        ["Init", "InitApply(web-a)", "InitApply(web-b)", "InitDone"]
    );
    // One live event, so the watch is open before it is expired.
    api.apply(slice("web-c", "198.18.0.3"))?;
    assert_eq!(events(&mut w, 1).await, ["Apply(web-c)"]);
    assert_eq!(api.stats().open_watches, 1);

    // The watcher is not polled from here until the re-list: it cannot see the delete
    // on its (ended) watch, only through the list.
    api.expire();
    api.delete(Kind::EndpointSlice, "shop", "web-b")
        .expect("web-b exists");
    let stats = api.stats();

    match next(&mut w, "the 410 on re-watch").await {
        Err(watcher::Error::WatchError(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    assert_eq!(
        events(&mut w, 4).await,
        ["Init", "InitApply(web-a)", "InitApply(web-c)", "InitDone"]
    );
    let after = api.stats();
    assert_eq!(after.gone, stats.gone + 1);
    assert_eq!(after.lists, stats.lists + 1);

    // And it watches on from the new list.
    api.apply(slice("web-d", "198.18.0.4"))?;
    assert_eq!(events(&mut w, 1).await, ["Apply(web-d)"]);
    Ok(())
}

#[tokio::test]
async fn a_continue_token_outliving_compaction_gets_410() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    api.apply_all(["a", "b", "c"].map(|n| web_service("shop", n)))?;
    let services: Api<Service> = Api::namespaced(api.client()?, "shop");
    let first = services.list(&ListParams::default().limit(1)).await?;
    let token = first.metadata.continue_.expect("more pages");

    api.expire();
    let err = services
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .expect_err("the token's snapshot is compacted");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert_eq!(api.stats().gone, 1);

    // Like the API server, the 410 offers a token to read on, inconsistently, from now.
    let inconsistent = status
        .metadata
        .and_then(|m| m.continue_)
        .expect("a 410 for a continue token carries a new one");
    let rest = services
        .list(&ListParams::default().continue_token(&inconsistent))
        .await?;
    let rest: Vec<String> = rest.items.iter().map(|s| s.name_any()).collect();
    assert_eq!(rest, ["b", "c"]);
    Ok(())
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_gets_a_410_error_event() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    api.set_history_limit(2);
    let from = api.resource_version();
    for app in ["v1", "v2", "v3"] {
        api.apply(web_pod("shop", "a", app))?;
    }
    let pods: Api<Pod> = Api::all(api.client()?);
    let mut stream = pods
        .watch(&WatchParams::default(), &from.to_string())
        .await?
        .boxed();
    match next(&mut stream, "the error event").await? {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
    let end = tokio::time::timeout(DEADLINE, stream.next()).await?;
    assert!(end.is_none(), "the stream ends after the error");

    // The two retained changes can still be watched from.
    let mut stream = pods
        .watch(&WatchParams::default(), &(from + 1).to_string())
        .await?
        .boxed();
    for want in ["v2", "v3"] {
        match next(&mut stream, want).await? {
            WatchEvent::Modified(p) => assert_eq!(p.labels()["app"], want),
            other => panic!("expected MODIFIED {want}, got {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn namespaced_lists_see_only_their_namespace() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    // As etcd keys `a-b/..` sorts before `a/..`, though namespace `a` sorts before `a-b`:
    // a list of `a` must neither stop early nor pick up `a-b`. (Namespaced watches are
    // checked with the watcher, above.)
    for ns in ["a", "a-b", "b"] {
        api.apply(web_pod(ns, "p1", "web"))?;
        api.apply(web_pod(ns, "p2", "web"))?;
        api.apply(endpoint_slice(ns, "web-x", "web", &[("", 80)], &[]))?;
    }
    let client = api.client()?;
    let in_a = Api::<Pod>::namespaced(client.clone(), "a")
        .list(&ListParams::default())
        .await?;
    let in_a: Vec<String> = in_a
        .items
        .iter()
        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    assert_eq!(in_a, ["a/p1", "a/p2"]);

    // Paging within a namespace stays in it.
    let page = Api::<Pod>::namespaced(client.clone(), "a-b")
        .list(&ListParams::default().limit(1))
        .await?;
    let token = page.metadata.continue_.expect("a second page");
    let page2 = Api::<Pod>::namespaced(client.clone(), "a-b")
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await?;
    assert_eq!(page2.items[0].namespace().as_deref(), Some("a-b"));
    assert_eq!(page2.metadata.continue_, None);

    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "b")
        .list(&ListParams::default())
        .await?;
    assert_eq!(slices.items.len(), 1);
    assert_eq!(slices.items[0].namespace().as_deref(), Some("b"));

    let all = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let all: Vec<String> = all
        .items
        .iter()
        .map(|p| p.namespace().unwrap_or_default())
        .collect();
    assert_eq!(all, ["a-b", "a-b", "a", "a", "b", "b"], "etcd key order");
    Ok(())
}

#[tokio::test]
async fn selectors_filter_lists_and_watches() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    api.apply_all([web_pod("shop", "w1", "web"), web_pod("shop", "a1", "api")])?;
    let pods: Api<Pod> = Api::all(api.client()?);
    let web = pods.list(&ListParams::default().labels("app=web")).await?;
    assert_eq!(web.items.len(), 1);
    assert_eq!(web.items[0].name_any(), "w1");
    let not_web = pods
        .list(&ListParams::default().labels("app notin (web)"))
        .await?;
    assert_eq!(not_web.items[0].name_any(), "a1");
    let by_name = pods
        .list(&ListParams::default().fields("metadata.name=a1"))
        .await?;
    assert_eq!(by_name.items.len(), 1);
    let err = pods
        .list(&ListParams::default().fields("spec.nope=1"))
        .await
        .expect_err("unsupported field");
    assert!(matches!(err, kube::Error::Api(s) if s.code == 400));

    // As the API server's watch cache does, an object that stops matching is DELETED
    // for the watch, and one that starts matching is ADDED.
    let mut w = watch(pods, watcher::Config::default().labels("app=web"));
    assert_eq!(
        events(&mut w, 3).await,
        ["Init", "InitApply(w1)", "InitDone"]
    );
    api.apply(web_pod("shop", "w1", "retired"))?;
    api.apply(web_pod("shop", "a1", "web"))?;
    assert_eq!(events(&mut w, 2).await, ["Delete(w1)", "Apply(a1)"]);
    Ok(())
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_a_bookmark() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    api.apply_all([web_pod("shop", "a", "web"), web_pod("shop", "b", "web")])?;
    let mut w = watch(
        Api::<Pod>::all(api.client()?),
        watcher::Config::default().streaming_lists(),
    );
    assert_eq!(
        events(&mut w, 4).await,
        ["Init", "InitApply(a)", "InitApply(b)", "InitDone"]
    );
    api.apply(web_pod("shop", "c", "web"))?;
    assert_eq!(events(&mut w, 1).await, ["Apply(c)"]);
    let stats = api.stats();
    assert_eq!((stats.lists, stats.watches), (0, 1));
    Ok(())
}

#[tokio::test]
async fn timeout_seconds_ends_a_watch() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    let pods: Api<Pod> = Api::all(api.client()?);
    let params = WatchParams::default().timeout(1).disable_bookmarks();
    let mut stream = pods
        .watch(&params, &api.resource_version().to_string())
        .await?
        .boxed();
    let end = tokio::time::timeout(DEADLINE, stream.next()).await?;
    assert!(end.is_none(), "expected the end of the watch, got {end:?}");
    api.wait_for_stats("the watch to close", DEADLINE, |s| s.open_watches == 0)
        .await?;
    Ok(())
}

#[tokio::test]
async fn built_objects_deserialize_as_kubernetes_types() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    let svc_rv = api.apply(service(
        "shop",
        "db",
        "None",
        &[ServicePort::new("pg", 5432).target_name("postgres")],
    ))?;
    api.apply(endpoint_slice(
        "shop",
        "db-abcde",
        "db",
        &[("pg", 5432)],
        &[
            Endpoint::new("198.18.0.7", true)
                .pod("db-0")
                .hostname("db-0")
                .node("node-1"),
            Endpoint::new("198.18.0.8", false).pod("db-1"),
        ],
    ))?;
    api.apply(pod(
        "shop",
        "db-0",
        "198.18.0.7",
        "db",
        Some(("StatefulSet", "db")),
        &[("app", "db")],
    ))?;
    let client = api.client()?;

    let svc = Api::<Service>::namespaced(client.clone(), "shop")
        .get("db")
        .await?;
    assert_eq!(rv(&svc), svc_rv);
    assert!(svc.metadata.uid.is_some() && svc.metadata.creation_timestamp.is_some());
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(
        port.target_port,
        Some(IntOrString::String("postgres".into()))
    );

    let slice = Api::<EndpointSlice>::namespaced(client.clone(), "shop")
        .get("db-abcde")
        .await?;
    assert_eq!(slice.labels()["kubernetes.io/service-name"], "db");
    assert_eq!(slice.address_type, "IPv4");
    let endpoints = slice.endpoints.unwrap_or_default();
    let ready: Vec<Option<bool>> = endpoints
        .iter()
        .map(|e| e.conditions.as_ref().and_then(|c| c.ready))
        .collect();
    assert_eq!(ready, [Some(true), Some(false)]);
    assert_eq!(endpoints[0].hostname.as_deref(), Some("db-0"));
    let target = endpoints[0].target_ref.as_ref().expect("targetRef");
    assert_eq!(target.name.as_deref(), Some("db-0"));

    let pods = Api::<Pod>::namespaced(client.clone(), "shop");
    let db0 = pods.get("db-0").await?;
    let owner = &db0.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("StatefulSet", "db")
    );
    assert_eq!(owner.controller, Some(true));
    let status = db0.status.expect("status");
    assert_eq!(status.pod_ip.as_deref(), Some("198.18.0.7"));
    assert_eq!(
        db0.spec.and_then(|s| s.service_account_name).as_deref(),
        Some("db")
    );

    assert!(pods.get_opt("db-9").await?.is_none());
    let err = pods.get("db-9").await.expect_err("no such pod");
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"));
    assert_eq!(client.apiserver_version().await?.major, "1");
    Ok(())
}

#[tokio::test]
async fn the_kubeconfig_points_a_client_at_the_server() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    api.apply(web_service("shop", "web"))?;
    let kubeconfig = kube::config::Kubeconfig::read_from(api.kubeconfig_path())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    assert_eq!(config.cluster_url.to_string(), format!("{}/", api.url()));
    let client = kube::Client::try_from(config)?;
    // The kubeconfig's context namespace is `default`; the service is elsewhere.
    assert!(Api::<Service>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .is_empty());
    let all = Api::<Service>::all(client)
        .list(&ListParams::default())
        .await?;
    assert_eq!(all.items.len(), 1);
    Ok(())
}

/// One HTTP/1.1 request on a fresh connection, returning the raw response (head and
/// body, undecoded) once the server closes it.
async fn raw_get(api: &FakeKube, path: &str) -> anyhow::Result<String> {
    let mut conn = tokio::net::TcpStream::connect(api.addr()).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: kube\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut resp)).await??;
    Ok(String::from_utf8(resp)?)
}

#[tokio::test]
async fn on_the_wire_lists_omit_item_types_and_watches_are_chunked_json_lines() -> anyhow::Result<()>
{
    let api = FakeKube::start().await?;
    let from = api.resource_version();
    api.apply(web_pod("shop", "a", "web"))?;

    // As the API server writes them, list items carry no apiVersion or kind.
    let list = raw_get(&api, "/api/v1/namespaces/shop/pods").await?;
    assert!(list.starts_with("HTTP/1.1 200 OK\r\n"), "{list}");
    assert!(list.contains(r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"#));
    assert!(list.contains(r#""items":[{"metadata":{"#), "{list}");

    let watch = raw_get(
        &api,
        &format!("/api/v1/pods?watch=1&resourceVersion={from}&timeoutSeconds=1"),
    )
    .await?;
    let (head, body) = watch.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    // One chunk holding one line, then (at timeoutSeconds) the last chunk.
    let (size, rest) = body.split_once("\r\n").expect("a chunk size");
    let line = &rest[..usize::from_str_radix(size, 16)?];
    assert!(line.starts_with(r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","#));
    assert!(line.ends_with("}}\n"), "{line}");
    assert!(body.ends_with("0\r\n\r\n"), "{body}");
    Ok(())
}
