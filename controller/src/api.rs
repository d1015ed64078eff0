//! The controller's HTTP API (port 8084): JSON under `/api/...`, what the CLI and the
//! dashboard read: `GET /api/version`, and the metrics API, answered from what the
//! scraper ([`crate::scrape`]) keeps of the proxies' metrics:
//!
//! - `/api/stat?resource=deploy[/NAME]&namespace=NS&window=1m[&to=TYPE/NAME][&from=TYPE/NAME][&to_namespace=NS][&from_namespace=NS]`
//! - `/api/edges?resource=deploy&namespace=NS&window=1m`
//! - `/api/namespace?namespace=NS&window=1m`: what the dashboard's namespace page
//!   shows, read at one moment: under `stat`, the `/api/stat` rows of each of the
//!   namespace's kinds (`deployment`, `statefulset`, `daemonset`, `pod`, `service`),
//!   and under `edges`, the edges between workloads (each pod's deployment,
//!   statefulset or daemonset, else the pod) with either end in the namespace;
//! - `/api/routes?[resource=svc[/NAME]]&namespace=NS&window=1m[&from=TYPE/NAME][&from_namespace=NS]`:
//!   each route's requests (effective, after retries) and, under `actual`, its attempts;
//! - `/api/series?resource=deploy/NAME&namespace=NS[&minutes=10][&step=10s][&to=..|&from=..]`:
//!   `/api/stat`'s answer once per `step` over the last `minutes`, each point what
//!   `/api/stat` with `window=<step>` would have answered then (the dashboard's charts,
//!   [`mesh_core::stats::SeriesQuery`]);
//! - `/api/workload?resource=deploy/NAME&namespace=NS`: the resource's pods (name,
//!   meshed) and the services whose endpoints are those pods, from the index, each
//!   with whether a ServiceProfile describes it;
//! - `/api/policy?namespace=NS&resource=deploy/NAME[&port=P[,P...]]`: each pod of the
//!   workload (name, IPs, service account, mesh identity) and, for each port Servers
//!   select, each container and probe port, each port its endpoint slices give and
//!   each port asked for, the compiled
//!   `InboundPolicy` a proxy would be sent, with the namespace's policy diagnostics
//!   (`mesh_core::policy::answer`; `mesh authz`, `mesh policy check`);
//! - `/api/profile-template?service=NAME&namespace=NS`: the annotated profile `mesh
//!   profile --template NAME -n NS` prints, for this controller's cluster domain
//!   (`text/plain`);
//! - `/api/metrics`: the same aggregates in Prometheus text, for a Prometheus to federate.
//! - `/api/health`: the control plane's checks as the controller sees them
//!   (`crate::health`), in `mesh check -o json`'s shape, with the version.
//! - `/api/top?resource=deploy[/NAME]&namespace=NS[&to=TYPE/NAME][&to_namespace=NS][&method=M][&path=PREFIX][&authority=A][&max_rps=N][&seconds=S][&hide_sources=true]`:
//!   the busiest paths of a resource's pods, as `mesh top` shows them, from a tap of
//!   `seconds` (default 5, at most 30) through the tap API's own fan-out, so the same
//!   authorization applies (in cluster mode the `Authorization: Bearer` token is
//!   reviewed, and the caller must be allowed to tap the namespace). The metrics
//!   carry no path (paths are unbounded); tap does.
//!
//! And what the destination service answers, from the same index, for `mesh
//! diagnostics`:
//! - `/api/diagnostics/endpoints?authority=HOST:PORT`: whether the destination exists,
//!   and each endpoint with its weight, identity, labels and protocol hints;
//! - `/api/diagnostics/profile?authority=HOST:PORT`: its profile as proxies get it.
//!
//! And one pod's proxy as it is now, for `mesh diagnostics proxy-metrics`:
//! - `/api/diagnostics/proxy-metrics?namespace=NS&pod=NAME`: the proxy's own
//!   `/metrics`, fetched when asked from where the scraper fetches it
//!   (`Pod::admin_addr`), within the scrape timeout, and passed on as it came
//!   (`text/plain`). So the CLI reads any proxy the controller can reach, in a cluster
//!   through the one port-forward to the controller, as against the demo: a 404 for a
//!   pod the index does not have or that has no proxy, a 502 naming the admin address
//!   when the proxy does not answer.
//!
//! And the dashboard's live data, as Server-Sent Events (`api/stream.rs`):
//! `/api/stream/stat?<the /api/stat parameters>[&interval=2s]`,
//! `/api/stream/namespace?<the /api/namespace parameters>[&interval=2s]` and
//! `/api/stream/tap?<the /api/top target and filter parameters>[&access_token=T]`.
//!
//! The port also serves the dashboard's files, everything outside `/api/`, and every
//! request to it passes the Host allowlist first ([`route`], [`crate::dashboard`]).
//!
//! No `namespace` means every namespace; `window` is a Go duration (default `1m`), at
//! most what the controller keeps (`10m`). A parameter that is unknown, repeated or
//! invalid is a 400 whose JSON `error` says which and why.

mod stream;

pub use self::stream::Streams;
use crate::{dashboard::AllowedHosts, index::Index, scrape::Store};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use mesh_api::tap::{HttpFilter, ResourceSelection, TapByResourceRequest};
use mesh_core::{
    index::{ObjKey, Snapshot},
    stats::{
        EdgesQuery, NamespaceQuery, PodMeta, ResourceKind, RoutesQuery, Selector, SeriesQuery,
        StatQuery,
    },
};
use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    sync::Arc,
    time::Duration,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The controller's version, as `mesh version` shows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The window a query that names none is over (Linkerd's default).
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// A series' span and step when the query names none: the dashboard's charts.
const SERIES_MINUTES: u64 = 10;
const SERIES_STEP: Duration = Duration::from_secs(10);

/// How long `/api/top` taps when the query does not say, and the longest it may.
const TOP_SECONDS: u64 = 5;
const TOP_MAX_SECONDS: u64 = 30;

/// The endpoints, all read-only.
const PATHS: [&str; 15] = [
    "/api/version",
    "/api/health",
    "/api/stat",
    "/api/series",
    "/api/workload",
    "/api/policy",
    "/api/profile-template",
    "/api/edges",
    "/api/namespace",
    "/api/routes",
    "/api/metrics",
    "/api/diagnostics/endpoints",
    "/api/diagnostics/profile",
    "/api/diagnostics/proxy-metrics",
    "/api/top",
];

/// What the API answers from: the scraped metrics, and the destination index.
#[derive(Clone)]
pub struct Sources {
    pub store: Arc<Store>,
    pub index: Index,
    /// How long a proxy gets to answer proxy-metrics: the scraper's timeout.
    pub scrape_timeout: Duration,
    /// The tap API's fan-out, which `/api/top` reads.
    pub tap: crate::tap::TapService,
    /// The names the port answers besides localhost and IP addresses.
    pub allowed_hosts: AllowedHosts,
    /// The event streams open now.
    pub streams: Streams,
    /// What `/api/health` reads besides the index and the store.
    pub health: crate::health::Parts,
    /// The policy index, which `/api/policy` reads.
    pub policy: crate::policy::PolicyIndex,
}

/// The body of the port's answers: whole, or a stream of events.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Serves the API and the dashboard on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, sources: Sources, shutdown: CancellationToken) {
    crate::http_server::serve("api", listener, shutdown, move |req| {
        let sources = sources.clone();
        async move { route(&req, &sources).await }
    })
    .await;
}

/// Answers one request to the port: the Host allowlist first, then the event streams,
/// the JSON API, or the dashboard's files; every answer with the security headers
/// ([`crate::dashboard`]).
pub async fn route<B>(req: &Request<B>, sources: &Sources) -> Response<Body> {
    let path = req.uri().path();
    let mut rsp = if let Some(refused) = sources.allowed_hosts.check(req) {
        refused.map(BodyExt::boxed_unsync)
    } else if path.starts_with("/api/stream/") {
        stream::handle(req, sources).await
    } else if path == "/api" || path.starts_with("/api/") {
        handle(req, sources).await.map(BodyExt::boxed_unsync)
    } else {
        crate::dashboard::asset(req, crate::dashboard::ASSETS).map(BodyExt::boxed_unsync)
    };
    crate::dashboard::secure(rsp.headers_mut());
    rsp
}

/// A request the API refuses, and why.
#[derive(Debug)]
struct BadRequest(String);

/// A request's query parameters, each taken once; what is left over is an error.
struct Params(HashMap<String, String>);

/// Answers one API request: at once, but for proxy-metrics, which waits on the proxy.
pub async fn handle<B>(req: &Request<B>, sources: &Sources) -> Response<Full<Bytes>> {
    let store = &*sources.store;
    let path = req.uri().path();
    if !PATHS.contains(&path) {
        return error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut rsp = error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        rsp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return rsp;
    }
    let answer = match path {
        "/api/version" => Ok(serde_json::json!({ "version": VERSION }).to_string()),
        "/api/health" => health(req, sources),
        "/api/metrics" => {
            let text = store.lock().export();
            let mut rsp = Response::new(Full::new(Bytes::from(text)));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return rsp;
        }
        "/api/stat" => stat(req, store),
        "/api/series" => series(req, store),
        "/api/workload" => workload(req, &sources.index),
        "/api/policy" => policy(req, &sources.index, &sources.policy),
        "/api/profile-template" => {
            return match profile_template(req, &sources.index) {
                Ok(text) => {
                    let mut rsp = Response::new(Full::new(Bytes::from(text)));
                    rsp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    rsp
                }
                Err(BadRequest(message)) => error(StatusCode::BAD_REQUEST, &message),
            }
        }
        "/api/edges" => edges(req, store),
        "/api/namespace" => namespace(req, store),
        "/api/routes" => routes(req, store),
        "/api/diagnostics/endpoints" => diagnostics(req, &sources.index, endpoints_json),
        "/api/diagnostics/profile" => diagnostics(req, &sources.index, profile_json),
        "/api/top" => return top(req, sources).await,
        _ => return proxy_metrics(req, sources).await,
    };
    match answer {
        Ok(body) => json(StatusCode::OK, body),
        Err(BadRequest(message)) => error(StatusCode::BAD_REQUEST, &message),
    }
}

/// The control plane's checks (`crate::health`), with the version.
fn health<B>(req: &Request<B>, sources: &Sources) -> Result<String, BadRequest> {
    Params::of(req)?.done()?;
    let categories = crate::health::categories(
        &sources.health,
        &sources.index,
        &sources.store,
        std::time::SystemTime::now(),
    );
    Ok(serde_json::json!({
        "version": VERSION,
        "success": mesh_core::health::success(&categories),
        "categories": categories,
    })
    .to_string())
}

fn stat<B>(req: &Request<B>, store: &Store) -> Result<String, BadRequest> {
    let mut p = Params::of(req)?;
    let query = stat_query(&mut p)?;
    p.done()?;
    stat_answer(&query, store)
}

/// `/api/stat`'s parameters (also `/api/stream/stat`'s, with its `interval`).
fn stat_query(p: &mut Params) -> Result<StatQuery, BadRequest> {
    let window = p.window()?;
    stat_query_over(p, window)
}

/// `/api/stat`'s parameters but its window.
fn stat_query_over(p: &mut Params, window: Duration) -> Result<StatQuery, BadRequest> {
    let namespace = p.take("namespace")?;
    let resource = p.required("resource")?;
    let selector = selector("resource", &resource, namespace.as_deref())?;
    let mut query = StatQuery::new(selector, window);
    query.to = p.peer("to", namespace.as_deref())?;
    query.from = p.peer("from", namespace.as_deref())?;
    Ok(query)
}

/// `/api/series`: `minutes` (a whole number, default 10) and `step` (a Go duration,
/// default 10 s) and `/api/stat`'s selection.
fn series<B>(req: &Request<B>, store: &Store) -> Result<String, BadRequest> {
    let mut p = Params::of(req)?;
    let minutes =
        match p.take("minutes")? {
            None => SERIES_MINUTES,
            Some(m) => m.parse::<u64>().ok().filter(|m| *m > 0).ok_or_else(|| {
                BadRequest(format!("minutes {m:?}: expected a whole number from 1"))
            })?,
        };
    let step = match p.take("step")? {
        None => SERIES_STEP,
        Some(s) => {
            mesh_api::duration::parse(&s).map_err(|e| BadRequest(format!("step {s:?}: {e}")))?
        }
    };
    let stat = stat_query_over(&mut p, step)?;
    p.done()?;
    let query = SeriesQuery {
        stat,
        span: Duration::from_secs(minutes.saturating_mul(60)),
    };
    let stats = store.lock();
    to_json(stats.series(&query, store.now()))
}

/// `/api/workload`: the pods and services of a resource made of pods (see the
/// module's documentation).
fn workload<B>(req: &Request<B>, index: &Index) -> Result<String, BadRequest> {
    let mut p = Params::of(req)?;
    let namespace = p.take("namespace")?;
    let resource = p.required("resource")?;
    let selector = selector("resource", &resource, namespace.as_deref())?;
    p.done()?;
    if !selector.kind.has_pods() {
        return Err(BadRequest(format!(
            "resource: a workload is asked of a resource made of pods (ns, deploy, sts, ds, po), not {}",
            selector.kind
        )));
    }
    let mut pods: Vec<(ObjKey, bool)> = workload_pods(index, &selector)
        .into_iter()
        .map(|(pod, _)| (pod.key, pod.meshed))
        .collect();
    pods.sort();
    let services: Vec<serde_json::Value> = index
        .services_of_pods(pods.iter().map(|(key, _)| key))
        .into_iter()
        .map(|(key, profile)| {
            serde_json::json!({
                "namespace": key.namespace,
                "name": key.name,
                "profile": profile,
            })
        })
        .collect();
    let pods: Vec<serde_json::Value> = pods
        .into_iter()
        .map(|(key, meshed)| {
            serde_json::json!({ "namespace": key.namespace, "name": key.name, "meshed": meshed })
        })
        .collect();
    Ok(serde_json::json!({ "pods": pods, "services": services }).to_string())
}

/// The pods of a resource made of pods, each with what the metrics API says of it (its
/// owner, identity): `/api/workload`'s and `/api/policy`'s one reading.
fn workload_pods(index: &Index, selector: &Selector) -> Vec<(mesh_core::index::Pod, PodMeta)> {
    let trust_domain = index.trust_domain().to_string();
    index
        .pods()
        .into_iter()
        .filter_map(|pod| {
            let meta = PodMeta::of(&pod, &trust_domain);
            meta.resource(selector.kind)
                .is_some_and(|r| selector.matches(&r))
                .then_some((pod, meta))
        })
        .collect()
}

/// `/api/policy?namespace=NS&resource=TYPE/NAME[&port=P[,P...]]`: each pod of a
/// workload, who it is as a client and each port's compiled inbound policy, with the
/// namespace's policy diagnostics (`mesh_core::policy::answer`).
fn policy<B>(
    req: &Request<B>,
    index: &Index,
    policies: &crate::policy::PolicyIndex,
) -> Result<String, BadRequest> {
    use mesh_core::policy::answer;
    let mut p = Params::of(req)?;
    let namespace = p.required("namespace")?;
    let resource = p.required("resource")?;
    let asked: Vec<u16> = match p.take("port")? {
        None => vec![],
        Some(list) => list
            .split(',')
            .map(|port| {
                port.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        BadRequest(format!("port {port:?}: expected a number from 1 to 65535"))
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let selector = selector("resource", &resource, Some(&namespace))?;
    p.done()?;
    if !selector.kind.has_pods() || selector.kind == ResourceKind::Namespace {
        return Err(BadRequest(format!(
            "resource: a policy is asked of a workload (deploy, sts, ds, po), not {}",
            selector.kind
        )));
    }
    let mut found = workload_pods(index, &selector);
    found.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    let policies = policies.lock();
    let pods = found
        .into_iter()
        .map(|(pod, meta)| {
            let mut answer = answer::PodPolicy {
                name: pod.key.name.to_string(),
                ips: pod.ips.clone(),
                service_account: pod.service_account.to_string(),
                identity: meta.identity.as_deref().map(str::to_owned),
                ..Default::default()
            };
            if let Ok((known, mut ports)) = policies.pod_ports(&pod.key.namespace, &pod.key.name) {
                answer.named_ports = known
                    .named_ports
                    .iter()
                    .map(|(name, ports)| (name.clone(), ports.iter().copied().collect()))
                    .collect();
                ports.extend(index.endpoint_ports(&pod.key));
                ports.extend(asked.iter().copied());
                answer.ports = ports
                    .into_iter()
                    .filter_map(|port| {
                        let policy = policies.get(&pod.key.namespace, &pod.key.name, port).ok()?;
                        Some(answer::PortPolicy {
                            port,
                            policy: (&policy).into(),
                        })
                    })
                    .collect();
            }
            answer
        })
        .collect();
    let diagnostics = policies
        .diagnostics(&namespace)
        .iter()
        .map(answer::Diagnostic::from)
        .collect();
    to_json(Ok::<_, Infallible>(answer::WorkloadPolicy {
        namespace,
        resource,
        pods,
        diagnostics,
    }))
}

/// `/api/profile-template`: `mesh profile --template`'s text, for this cluster.
fn profile_template<B>(req: &Request<B>, index: &Index) -> Result<String, BadRequest> {
    let mut p = Params::of(req)?;
    let service = p.required("service")?;
    let namespace = p.required("namespace")?;
    p.done()?;
    for (what, name) in [("service", &service), ("namespace", &namespace)] {
        if !mesh_api::names::is_dns_label(name) {
            return Err(BadRequest(format!(
                "{what} {name:?} is not a DNS-1123 label (lowercase letters, digits and '-', \
                 at most 63, starting and ending with a letter or digit)"
            )));
        }
    }
    Ok(mesh_core::profile::template::template(
        &service,
        &namespace,
        index.cluster_domain(),
    ))
}

/// `/api/stat`'s answer to `query`, now.
fn stat_answer(query: &StatQuery, store: &Store) -> Result<String, BadRequest> {
    let stats = store.lock();
    to_json(stats.stat(query, store.now()))
}

fn edges<B>(req: &Request<B>, store: &Store) -> Result<String, BadRequest> {
    let mut p = Params::of(req)?;
    let namespace = p.take("namespace")?;
    let resource = p.required("resource")?;
    let kind: ResourceKind = resource
        .parse()
        .map_err(|e| BadRequest(format!("resource: {e}")))?;
    let query = EdgesQuery {
        kind,
        namespace,
        window: p.window()?,
    };
    p.done()?;
    let stats = store.lock();
    to_json(stats.edges(&query, store.now()))
}

fn namespace<B>(req: &Request<B>, store: &Store) -> Result<String, BadRequest> {
    let mut p = Params::of(req)?;
    let query = namespace_query(&mut p)?;
    p.done()?;
    namespace_answer(&query, store)
}

/// `/api/namespace`'s parameters (also `/api/stream/namespace`'s, with its `interval`).
fn namespace_query(p: &mut Params) -> Result<NamespaceQuery, BadRequest> {
    Ok(NamespaceQuery {
        namespace: p.required("namespace")?,
        window: p.window()?,
    })
}

/// `/api/namespace`'s answer to `query`, now.
fn namespace_answer(query: &NamespaceQuery, store: &Store) -> Result<String, BadRequest> {
    let stats = store.lock();
    to_json(stats.namespace(query, store.now()))
}

fn routes<B>(req: &Request<B>, store: &Store) -> Result<String, BadRequest> {
    let mut p = Params::of(req)?;
    let namespace = p.take("namespace")?;
    let service = match p.take("resource")? {
        Some(r) => Some(selector("resource", &r, namespace.as_deref())?),
        // Every service, in the namespace if one is given.
        None => Some(Selector {
            kind: ResourceKind::Service,
            namespace: namespace.clone(),
            name: None,
        }),
    };
    let query = RoutesQuery {
        service,
        from: p.peer("from", namespace.as_deref())?,
        window: p.window()?,
    };
    p.done()?;
    let stats = store.lock();
    to_json(stats.routes(&query, store.now()))
}

/// Answers a diagnostics query: what the destination service would send a proxy that
/// asked for `authority` (a `host:port`, or a pod's `ip:port`), rendered by `render`.
fn diagnostics<B>(
    req: &Request<B>,
    index: &Index,
    render: fn(&str, &Snapshot) -> serde_json::Value,
) -> Result<String, BadRequest> {
    let mut p = Params::of(req)?;
    let authority = p.required("authority")?;
    p.done()?;
    let target = index
        .parse(&authority, "")
        .map_err(|e| BadRequest(format!("authority {authority:?}: {e}")))?;
    let snapshot = index.subscribe(target).current();
    Ok(render(&authority, &snapshot).to_string())
}

/// The busiest paths of a resource's pods, from a tap of a few seconds (see the
/// module's documentation): `{seconds, events, requests, rows: [{source, destination,
/// method, path, count, success_rate, best_ms, worst_ms, last_ms}], evicted: {open,
/// rows, unmatched}}`, the rows busiest first.
async fn top<B>(req: &Request<B>, sources: &Sources) -> Response<Full<Bytes>> {
    let (request, hide_sources, seconds) = match top_params(req) {
        Ok(params) => params,
        Err(BadRequest(message)) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let authorization = req.headers().get(header::AUTHORIZATION);
    let events = match crate::tap::bearer_of(authorization.map(|v| v.as_bytes())) {
        Ok(token) => sources.tap.open(token.as_deref(), request).await,
        Err(status) => Err(status),
    };
    let mut events = match events {
        Ok(events) => events,
        Err(status) => return tap_error(&status),
    };
    let mut table = mesh_core::top::Top::new(hide_sources);
    let mut received = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    // Until the window is over, or every pod's stream has ended.
    while let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline, events.recv()).await {
        received += 1;
        table.record(&event);
    }
    drop(events);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rows: Vec<serde_json::Value> = table
        .rows_by_count()
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "source": (!hide_sources).then_some(&r.source),
                "destination": r.destination,
                "method": r.method,
                "path": r.path,
                "count": r.count,
                "success_rate": r.success_rate(),
                "best_ms": ms(r.best),
                "worst_ms": ms(r.worst),
                "last_ms": ms(r.last),
            })
        })
        .collect();
    let evicted = table.evictions();
    let body = serde_json::json!({
        "seconds": seconds,
        "events": received,
        "requests": table.completed(),
        "rows": rows,
        "evicted": {
            "open": evicted.open,
            "rows": evicted.rows,
            "unmatched": evicted.unmatched,
        },
    });
    json(StatusCode::OK, body.to_string())
}

/// `/api/top`'s query: the tap request, whether sources are merged, and for how many
/// seconds to tap.
fn top_params<B>(req: &Request<B>) -> Result<(TapByResourceRequest, bool, u64), BadRequest> {
    let mut p = Params::of(req)?;
    let request = tap_request(&mut p)?;
    let seconds = match p.take("seconds")? {
        None => TOP_SECONDS,
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=TOP_MAX_SECONDS).contains(s))
            .ok_or_else(|| {
                BadRequest(format!(
                    "seconds {s:?}: expected a whole number from 1 to {TOP_MAX_SECONDS}"
                ))
            })?,
    };
    let hide_sources = match p.take("hide_sources")?.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(BadRequest(format!(
                "hide_sources {other:?}: expected true or false"
            )))
        }
    };
    p.done()?;
    Ok((request, hide_sources, seconds))
}

/// The tap request of `/api/top`'s (and `/api/stream/tap`'s) target and filter
/// parameters: `resource`, `namespace`, `to`, `to_namespace`, `method`, `path`,
/// `authority`, `max_rps`.
fn tap_request(p: &mut Params) -> Result<TapByResourceRequest, BadRequest> {
    let namespace = p.take("namespace")?.unwrap_or_default();
    let resource = p.required("resource")?;
    let (kind, name) = resource.split_once('/').unwrap_or((&resource, ""));
    let to = match p.take("to")? {
        Some(to) => {
            let Some((kind, name)) = to
                .split_once('/')
                .filter(|(k, n)| !k.is_empty() && !n.is_empty())
            else {
                return Err(BadRequest(format!("to {to:?}: expected TYPE/NAME")));
            };
            Some(ResourceSelection {
                namespace: p.take("to_namespace")?.unwrap_or_default(),
                kind: kind.to_string(),
                name: name.to_string(),
                label_selector: String::new(),
            })
        }
        None => None,
    };
    let http = HttpFilter {
        method: p.take("method")?,
        path_prefix: p.take("path")?,
        authority: p.take("authority")?,
    };
    let max_rps =
        match p.take("max_rps")? {
            None => crate::tap::DEFAULT_MAX_RPS,
            Some(n) => n.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                BadRequest(format!("max_rps {n:?}: expected a whole number from 1"))
            })?,
        };
    Ok(TapByResourceRequest {
        target: Some(ResourceSelection {
            namespace,
            kind: kind.to_string(),
            name: name.to_string(),
            label_selector: String::new(),
        }),
        r#match: http.to_match(),
        max_rps,
        extract: None,
        to,
    })
}

/// A refusal of the tap API as an HTTP answer: the status its code means, and its
/// message.
fn tap_error(status: &tonic::Status) -> Response<Full<Bytes>> {
    use tonic::Code;
    let http = match status.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(http, status.message())
}

/// A pod's proxy's `/metrics`, fetched now (see the module's documentation).
async fn proxy_metrics<B>(req: &Request<B>, sources: &Sources) -> Response<Full<Bytes>> {
    let key = match proxy_metrics_params(req) {
        Ok(key) => key,
        Err(BadRequest(message)) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let Some(pod) = sources.index.pod(&key) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no pod {} in namespace {}", key.name, key.namespace),
        );
    };
    if !pod.meshed {
        return error(
            StatusCode::NOT_FOUND,
            &format!("pod {key} is not meshed: it has no proxy"),
        );
    }
    let Some(addr) = pod.admin_addr() else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("pod {key} has no IP yet, so no proxy to ask"),
        );
    };
    let timeout = sources.scrape_timeout;
    match crate::scrape::fetch(addr, timeout).await {
        Ok(page) => {
            let mut rsp = Response::new(Full::new(Bytes::from(page)));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            rsp
        }
        Err(crate::scrape::ScrapeFailed::Timeout) => error(
            StatusCode::BAD_GATEWAY,
            &format!("the proxy of pod {key} at {addr} did not answer within {timeout:?}"),
        ),
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            &format!("the proxy of pod {key} at {addr} did not answer: {e}"),
        ),
    }
}

/// proxy-metrics' `namespace` and `pod`, both required.
fn proxy_metrics_params<B>(req: &Request<B>) -> Result<ObjKey, BadRequest> {
    let mut p = Params::of(req)?;
    let namespace = p.required("namespace")?;
    let pod = p.required("pod")?;
    p.done()?;
    Ok(ObjKey::new(&namespace, &pod))
}

fn endpoints_json(authority: &str, s: &Snapshot) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = s
        .endpoints
        .iter()
        .map(|e| {
            serde_json::json!({
                "address": e.addr.to_string(),
                "weight": e.weight,
                "identity": e.identity.as_ref().map(|i| &*i.name),
                "labels": e.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
                "h2": e.h2,
                "opaque": e.opaque,
            })
        })
        .collect();
    serde_json::json!({
        "authority": authority,
        "exists": s.exists,
        "labels": s.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        "endpoints": endpoints,
    })
}

fn profile_json(authority: &str, s: &Snapshot) -> serde_json::Value {
    let p = &s.profile;
    let spec = p.spec.as_ref().map(|spec| {
        let v = &spec.0;
        serde_json::json!({
            "routes": v.routes.iter().map(|r| serde_json::json!({
                "name": r.name,
                "is_retryable": r.is_retryable,
                "timeout_ms": r.timeout_ms,
                "max_retries": r.max_retries,
                "response_classes": r.response_classes.len(),
            })).collect::<Vec<_>>(),
            "retry_budget": {
                "retry_ratio": v.retry_budget.retry_ratio,
                "min_retries_per_second": v.retry_budget.min_retries_per_second,
                "ttl_ms": v.retry_budget.ttl_ms,
            },
            "dst_overrides": v.dst_overrides.iter().map(|d| serde_json::json!({
                "authority": d.authority,
                "weight": d.weight,
            })).collect::<Vec<_>>(),
        })
    });
    serde_json::json!({
        "authority": authority,
        "fully_qualified_name": p.fully_qualified_name.as_deref(),
        "opaque": p.opaque,
        "endpoint": p.endpoint.as_ref().map(|e| e.addr.to_string()),
        "profile": spec,
    })
}

fn selector(name: &str, value: &str, namespace: Option<&str>) -> Result<Selector, BadRequest> {
    Selector::parse(value, namespace).map_err(|e| BadRequest(format!("{name}: {e}")))
}

fn to_json<T: serde::Serialize, E: std::fmt::Display>(
    answer: Result<T, E>,
) -> Result<String, BadRequest> {
    let answer = answer.map_err(|e| BadRequest(e.to_string()))?;
    // Serializing these types cannot fail: string keys, and non-finite numbers
    // become null.
    serde_json::to_string(&answer).map_err(|e| BadRequest(format!("cannot answer: {e}")))
}

// === impl Params ===

impl Params {
    fn of<B>(req: &Request<B>) -> Result<Self, BadRequest> {
        let mut params = HashMap::new();
        let query = req.uri().query().unwrap_or("");
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if params
                .insert(name.to_string(), value.into_owned())
                .is_some()
            {
                return Err(BadRequest(format!("parameter {name} is given twice")));
            }
        }
        Ok(Self(params))
    }

    /// The parameter, if given; an empty value counts as not given.
    fn take(&mut self, name: &str) -> Result<Option<String>, BadRequest> {
        Ok(self.0.remove(name).filter(|v| !v.is_empty()))
    }

    fn required(&mut self, name: &str) -> Result<String, BadRequest> {
        self.take(name)?
            .ok_or_else(|| BadRequest(format!("parameter {name} is required")))
    }

    /// `window`, a Go duration; [`DEFAULT_WINDOW`] when not given.
    fn window(&mut self) -> Result<Duration, BadRequest> {
        match self.take("window")? {
            None => Ok(DEFAULT_WINDOW),
            Some(w) => {
                mesh_api::duration::parse(&w).map_err(|e| BadRequest(format!("window {w:?}: {e}")))
            }
        }
    }

    /// `to` or `from` (`TYPE/NAME`), in `<name>_namespace`, else `namespace`.
    fn peer(
        &mut self,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<Option<Selector>, BadRequest> {
        let own_namespace = self.take(&format!("{name}_namespace"))?;
        let Some(value) = self.take(name)? else {
            return match own_namespace {
                Some(_) => Err(BadRequest(format!(
                    "{name}_namespace is given without {name}"
                ))),
                None => Ok(None),
            };
        };
        let namespace = own_namespace.as_deref().or(namespace);
        selector(name, &value, namespace).map(Some)
    }

    /// Refuses what no one took: a misspelt parameter would otherwise be ignored.
    fn done(self) -> Result<(), BadRequest> {
        let mut unknown: Vec<&String> = self.0.keys().collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(name) => Err(BadRequest(format!("unknown parameter {name}"))),
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }).to_string())
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::stats::Limits;

    fn call(method: Method, path: &str) -> (StatusCode, serde_json::Value) {
        call_with(&sources(), method, path)
    }

    fn sources() -> Sources {
        Sources {
            store: Arc::new(Store::new(Limits::default())),
            index: Index::new("cluster.local", "cluster.local"),
            scrape_timeout: Duration::from_secs(1),
            tap: crate::tap::TapService::new(
                Index::new("cluster.local", "cluster.local"),
                Err("no identity in this test".to_string()),
                None,
                CancellationToken::new(),
            ),
            allowed_hosts: AllowedHosts::default(),
            streams: Streams::default(),
            health: Default::default(),
            policy: crate::policy::PolicyIndex::new(Default::default()),
        }
    }

    fn call_with(sources: &Sources, method: Method, path: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let rsp =
            futures_util::FutureExt::now_or_never(handle(&req, sources)).expect("answered at once");
        let status = rsp.status();
        let body = futures_util::FutureExt::now_or_never(rsp.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn version_is_served() {
        let (status, body) = call(Method::GET, "/api/version");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["version"], VERSION);
        assert_eq!(
            call(Method::POST, "/api/version").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (status, body) = call(Method::GET, "/api/nope");
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains("/api/nope"));
    }

    /// `/api/health`: `mesh check -o json`'s shape; the controller's own view of its
    /// discovery, its CA (an issuer expiring in 10 days is a warning, as in `mesh
    /// check`) and its scrapes.
    #[test]
    fn health_reports_the_controllers_own_checks() {
        use mesh_core::ca::{generate_anchor_and_issuer_between, Ca, DEFAULT_LIFETIME};
        let day = Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        let (anchor, issuer, key) =
            generate_anchor_and_issuer_between("cluster.local", now - day, now + 10 * day);
        let ca = Ca::new(
            "cluster.local",
            DEFAULT_LIFETIME,
            &issuer,
            &key,
            &anchor,
            now,
        )
        .unwrap();
        let mut sources = sources();
        sources.health.ca = Some(Arc::new(ca));
        let (status, body) = call_with(&sources, Method::GET, "/api/health");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["version"], VERSION);
        assert_eq!(body["success"], false, "{body}");
        let result = |id: &str| -> serde_json::Value {
            body["categories"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|c| c["checks"].as_array().unwrap().iter())
                .find(|c| c["id"] == id)
                .unwrap_or_else(|| panic!("no {id} in {body}"))
                .clone()
        };
        // Nothing has synced this index: not ready, and so never scraped.
        assert_eq!(result("cp-ready")["result"], "error", "{body}");
        assert_eq!(
            result("cp-ready")["hint"],
            "see docs/checks.md#cp-ready for hints"
        );
        assert_eq!(result("dp-proxies-scraped")["result"], "warning", "{body}");
        assert_eq!(result("identity-anchors")["result"], "success");
        assert_eq!(result("identity-issuer")["result"], "success");
        let soon = result("identity-issuer-60d");
        assert_eq!(soon["result"], "warning", "{body}");
        assert!(
            soon["error"]
                .as_str()
                .unwrap()
                .contains("expires in 9 days"),
            "{soon}"
        );
        assert_eq!(result("identity-anchors-60d")["result"], "warning");
        // No webhook, no Kubernetes backend: their checks are not made.
        let names: Vec<&str> = body["categories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["mesh-control-plane", "mesh-identity", "mesh-data-plane"]
        );
        assert_eq!(
            call(Method::GET, "/api/health?x=1").0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn empty_answers_have_their_shape() {
        let (status, body) = call(Method::GET, "/api/stat?resource=deploy&namespace=demo");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["window_seconds"], 60.0);
        assert_eq!(body["rows"], serde_json::json!([]));
        assert_eq!(body["overflow"]["pods"], 0);
        let (status, body) = call(Method::GET, "/api/edges?resource=po&window=10s");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["edges"], serde_json::json!([]));
        let (status, body) = call(Method::GET, "/api/namespace?namespace=demo");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["window_seconds"], 60.0);
        assert_eq!(
            body["stat"],
            serde_json::json!({"deployment": [], "statefulset": [], "daemonset": [],
                               "pod": [], "service": []})
        );
        assert_eq!(body["edges"], serde_json::json!([]));
        let (status, body) = call(Method::GET, "/api/routes?resource=svc%2Fweb&namespace=demo");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["routes"], serde_json::json!([]));
    }

    #[test]
    fn top_says_what_is_wrong_before_it_taps() {
        let demo = "/api/top?resource=deploy/web&namespace=demo";
        for (path, status, want) in [
            ("/api/top".to_string(), 400, "resource is required"),
            (format!("{demo}&seconds=0"), 400, "seconds"),
            (format!("{demo}&seconds=31"), 400, "from 1 to 30"),
            (format!("{demo}&max_rps=none"), 400, "max_rps"),
            (format!("{demo}&to=deploy"), 400, "expected TYPE/NAME"),
            (format!("{demo}&hide_sources=yes"), 400, "hide_sources"),
            (format!("{demo}&sort=count"), 400, "unknown parameter sort"),
            // The tap API's own refusals, as HTTP: the target read first...
            (
                "/api/top?resource=authority/web.demo.svc.cluster.local:80&namespace=demo"
                    .to_string(),
                400,
                "an authority has no pods",
            ),
            // ...then whether tap is on at all.
            (demo.to_string(), 503, "no identity in this test"),
        ] {
            let (got, body) = call(Method::GET, &path);
            assert_eq!(got.as_u16(), status, "{path}: {body}");
            let message = body["error"].as_str().unwrap_or_default();
            assert!(message.contains(want), "{path}: {message}");
        }
    }

    #[test]
    fn bad_queries_say_why() {
        let cases = [
            ("/api/stat", "resource is required"),
            ("/api/stat?resource=deployz", "unknown resource type"),
            ("/api/stat?resource=deploy&window=1", "window"),
            ("/api/stat?resource=deploy&window=2h", "longer than"),
            (
                "/api/stat?resource=deploy&windw=1m",
                "unknown parameter windw",
            ),
            ("/api/stat?resource=deploy&namespace=a&namespace=b", "twice"),
            (
                "/api/stat?resource=deploy&to=deploy/a&from=deploy/b",
                "both",
            ),
            ("/api/stat?resource=deploy&to_namespace=x", "without to"),
            ("/api/stat?resource=svc&to=deploy/a", "made of pods"),
            ("/api/edges?resource=svc", "made of pods"),
            ("/api/routes?resource=deploy/web", "service"),
            ("/api/namespace", "namespace is required"),
            (
                "/api/namespace?namespace=demo&window=0s",
                "longer than zero",
            ),
            (
                "/api/namespace?namespace=demo&resource=deploy",
                "unknown parameter resource",
            ),
        ];
        for (path, why) in cases {
            let (status, body) = call(Method::GET, path);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            let message = body["error"].as_str().unwrap();
            assert!(message.contains(why), "{path}: {message}");
        }
    }

    #[test]
    fn series_services_and_profile_templates_say_why_they_refuse() {
        let cases = [
            ("/api/series", "resource is required"),
            ("/api/series?resource=deploy&minutes=0", "minutes"),
            ("/api/series?resource=deploy&minutes=ten", "minutes"),
            ("/api/series?resource=deploy&minutes=11", "longer than"),
            ("/api/series?resource=deploy&step=10", "step"),
            (
                "/api/series?resource=deploy&step=2m&minutes=1",
                "at least one step",
            ),
            (
                "/api/series?resource=deploy&step=1s&minutes=10",
                "600 points",
            ),
            (
                "/api/series?resource=deploy&window=1m",
                "unknown parameter window",
            ),
            ("/api/workload", "resource is required"),
            ("/api/workload?resource=svc/web", "made of pods"),
            ("/api/profile-template?service=web", "namespace is required"),
            (
                "/api/profile-template?service=Web&namespace=demo",
                "service \"Web\"",
            ),
            (
                "/api/profile-template?service=web&namespace=a.b",
                "namespace \"a.b\"",
            ),
        ];
        for (path, why) in cases {
            let (status, body) = call(Method::GET, path);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            let message = body["error"].as_str().unwrap();
            assert!(message.contains(why), "{path}: {message}");
        }
        let (status, body) = call(
            Method::GET,
            "/api/series?resource=deploy/web&namespace=demo",
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["step_seconds"], 10.0);
        assert_eq!(body["span_seconds"], 600.0);
    }

    /// `/api/policy`: a workload's pods with their identity, and each port's compiled
    /// policy (the Server's port, a port asked for, under the pod's default) in the
    /// shape the CLI reads, with the namespace's diagnostics; bad queries say why.
    #[test]
    fn a_workloads_policy_per_pod_and_port() {
        let sources = sources();
        let mut file = mesh_core::file::parse(
            "services:\n  - name: api\n    namespace: shop\n    endpoints:\n      - address: 198.18.0.4:8080\n        labels: {pod: api-0, deployment: api, serviceaccount: api}\n        identity: api.shop.serviceaccount.identity.mesh.cluster.local\n        namedPorts: {http: 8080}\n        defaultInboundPolicy: deny\npolicies:\n  - apiVersion: policy.mesh.rs/v1alpha1\n    kind: Server\n    metadata: {name: api-http, namespace: shop}\n    spec: {podSelector: {matchLabels: {deployment: api}}, port: http, proxyProtocol: HTTP/1}\n  - apiVersion: policy.mesh.rs/v1alpha1\n    kind: AuthorizationPolicy\n    metadata: {name: orphan, namespace: shop}\n    spec:\n      targetRef: {group: policy.mesh.rs, kind: Server, name: api-http}\n      requiredAuthenticationRefs: [{group: policy.mesh.rs, kind: MeshTLSAuthentication, name: missing}]\n",
            "cluster.local",
        )
        .unwrap();
        crate::file::apply_policy(&sources.policy, &mut file);
        mesh_core::file::apply(&sources.index, file);
        let (status, body) = call(
            Method::GET,
            "/api/policy?resource=deploy/api&namespace=shop",
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["pods"],
            serde_json::json!([]),
            "another index: no pods"
        );
        let (status, body) = call_with(
            &sources,
            Method::GET,
            "/api/policy?resource=deploy/api&namespace=shop&port=9000",
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: mesh_core::policy::answer::WorkloadPolicy =
            serde_json::from_value(body).unwrap();
        let [pod] = &answer.pods[..] else {
            panic!("{answer:?}")
        };
        assert_eq!(pod.name, "api-0");
        assert_eq!(pod.ips, ["198.18.0.4".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(pod.named_ports["http"], [8080]);
        let ports: Vec<(u16, &str, &str)> = pod
            .ports
            .iter()
            .map(|p| (p.port, &*p.policy.server.name, &*p.policy.protocol))
            .collect();
        assert_eq!(
            ports,
            [(8080, "api-http", "http1"), (9000, "deny", "detect")]
        );
        // What the controller sends a proxy, read back whole.
        let sent = sources.policy.lock().get("shop", "api-0", 8080).unwrap();
        assert_eq!(pod.ports[0].policy.to_proto().unwrap(), sent);
        assert_eq!(answer.diagnostics[0].name, "orphan");
        for (path, why) in [
            ("/api/policy?resource=deploy/api", "namespace is required"),
            ("/api/policy?namespace=shop&resource=svc/api", "workload"),
            ("/api/policy?namespace=shop&resource=ns/shop", "workload"),
            (
                "/api/policy?namespace=shop&resource=deploy/api&port=0",
                "port \"0\"",
            ),
        ] {
            let (status, body) = call_with(&sources, Method::GET, path);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert!(
                body["error"].as_str().unwrap().contains(why),
                "{path}: {body}"
            );
        }
    }

    /// The services of a workload are the ones whose endpoints are its pods, with
    /// whether a profile describes each; the template is `mesh profile --template`'s,
    /// for the index's cluster domain.
    #[test]
    fn a_workloads_services_and_their_profile_template() {
        let sources = Sources {
            index: Index::new("example.org", "example.org"),
            ..sources()
        };
        let file = mesh_core::file::parse(
            "services:\n  - name: web\n    namespace: demo\n    ports: [{port: 80}]\n    endpoints:\n      - address: 198.18.0.10:8080\n        labels: {pod: web-0, deployment: web, serviceaccount: web}\n  - name: web-admin\n    namespace: demo\n    ports: [{port: 9000}]\n    endpoints:\n      - address: 198.18.0.10:9000\n        labels: {pod: web-0, deployment: web, serviceaccount: web}\n  - name: db\n    namespace: demo\n    ports: [{port: 5432}]\n    endpoints:\n      - address: 198.18.0.11:5432\n        labels: {pod: db-0, statefulset: db, serviceaccount: db}\nprofiles:\n  - metadata: {name: web.demo.svc.example.org}\n    spec:\n      routes:\n        - name: all\n          condition: {pathRegex: '/.*'}\n",
            "example.org",
        )
        .unwrap();
        mesh_core::file::apply(&sources.index, file);
        let (status, body) = call_with(
            &sources,
            Method::GET,
            "/api/workload?resource=deploy/web&namespace=demo",
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            serde_json::json!({"pods": [{"namespace": "demo", "name": "web-0", "meshed": false}], "services": [
                {"namespace": "demo", "name": "web", "profile": true},
                {"namespace": "demo", "name": "web-admin", "profile": false},
            ]})
        );
        let (_, body) = call_with(
            &sources,
            Method::GET,
            "/api/workload?resource=sts&namespace=demo",
        );
        assert_eq!(body["services"][0]["name"], "db");
        let (_, body) = call_with(
            &sources,
            Method::GET,
            "/api/workload?resource=deploy/nope&namespace=demo",
        );
        assert_eq!(body, serde_json::json!({"pods": [], "services": []}));

        let req = Request::builder()
            .uri("/api/profile-template?service=web-admin&namespace=demo")
            .body(())
            .unwrap();
        let rsp = futures_util::FutureExt::now_or_never(handle(&req, &sources)).unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(
            rsp.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let body = futures_util::FutureExt::now_or_never(rsp.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(
            text,
            mesh_core::profile::template::template("web-admin", "demo", "example.org")
        );
        assert!(
            text.contains("name: web-admin.demo.svc.example.org\n"),
            "{text}"
        );
    }

    /// Diagnostics answer what the destination service would tell a proxy, from the
    /// same index: endpoints with their identities and labels, and the profile.
    #[test]
    fn diagnostics_answer_from_the_index() {
        let sources = sources();
        let file = mesh_core::file::parse(
            "services:\n  - name: web\n    namespace: demo\n    ports: [{port: 80}]\n    endpoints:\n      - address: 198.18.0.10:8080\n        labels: {pod: web-0, serviceaccount: web}\n        identity: web.demo.serviceaccount.identity.mesh.cluster.local\nprofiles:\n  - metadata: {name: web.demo.svc.cluster.local}\n    spec:\n      routes:\n        - name: all\n          condition: {pathRegex: '/.*'}\n          isRetryable: true\n",
            "cluster.local",
        )
        .unwrap();
        mesh_core::file::apply(&sources.index, file);
        let (status, body) = call_with(
            &sources,
            Method::GET,
            "/api/diagnostics/endpoints?authority=web.demo.svc.cluster.local:80",
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["exists"], true);
        let ep = &body["endpoints"][0];
        assert_eq!(ep["address"], "198.18.0.10:8080");
        assert_eq!(
            ep["identity"],
            "web.demo.serviceaccount.identity.mesh.cluster.local"
        );
        assert_eq!(ep["labels"]["pod"], "web-0");
        let (status, body) = call_with(
            &sources,
            Method::GET,
            "/api/diagnostics/profile?authority=web.demo.svc.cluster.local:80",
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["fully_qualified_name"], "web.demo.svc.cluster.local");
        assert_eq!(body["profile"]["routes"][0]["name"], "all");
        assert_eq!(body["profile"]["routes"][0]["is_retryable"], true);
        // Something the index does not know, and something that is no authority.
        let (status, body) = call_with(
            &sources,
            Method::GET,
            "/api/diagnostics/endpoints?authority=nope.demo.svc.cluster.local:80",
        );
        assert_eq!(
            (status, &body["exists"]),
            (StatusCode::OK, &serde_json::json!(false))
        );
        assert_eq!(body["endpoints"], serde_json::json!([]));
        let (status, body) = call_with(
            &sources,
            Method::GET,
            "/api/diagnostics/endpoints?authority=web:0",
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"].as_str().unwrap().contains("web:0"), "{body}");
    }
}
