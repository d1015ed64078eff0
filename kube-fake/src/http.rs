//! The HTTP face of the fake: routing, query parameters with the API server's rules,
//! list pages, continue tokens, and `Status` errors.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::StreamExt as _;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt as _, Full, StreamBody};
use hyper::{body::Frame, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::{json, Value};
use tokio::{net::TcpListener, task::JoinSet};

use super::{
    faults, portforward,
    review::User,
    select::{FieldSelector, LabelSelector},
    store::{Filter, RvError},
    types,
    watch::{self, Start, WatchRequest},
    Inner, Kind,
};

pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A watch without `timeoutSeconds` runs this long; the API server picks a random time
/// around its `--min-request-timeout` (30 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Accepts connections until the task is aborted; aborting it drops the `JoinSet` and so
/// ends every connection, watches included.
pub(super) async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (io, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        tracing::warn!(%error, "fake kube-apiserver accept failed");
                        // Out of file descriptors, most likely: give some back first.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // Watch events are small writes; without this, Nagle holds each one
                // until the client's delayed ACK (tens of ms), which a real API server
                // does not do.
                let _ = io.set_nodelay(true);
                let inner = inner.clone();
                conns.spawn(async move {
                    // A port-forward accepted on this connection, run once hyper hands
                    // the connection over: on this task, so that aborting the accept
                    // loop ends it too.
                    let accepted: Arc<Mutex<Option<portforward::Accepted>>> = Arc::default();
                    let slot = accepted.clone();
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let inner = inner.clone();
                        let slot = slot.clone();
                        async move {
                            let mut rsp = match faulted(&inner, &req) {
                                Some(answer) => answer,
                                None => dispatch(&inner, req, &slot).await,
                            };
                            // Every answer carries the server's clock, as the API
                            // server's do (`mesh check` reads it for clock skew).
                            if let Ok(date) = http::HeaderValue::from_str(&inner.http_date()) {
                                rsp.headers_mut().insert(header::DATE, date);
                            }
                            Ok::<_, Infallible>(rsp)
                        }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    if let Err(error) = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), svc)
                        .await
                    {
                        tracing::debug!(%peer, %error, "fake kube-apiserver connection");
                    }
                    let accepted = accepted
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take();
                    if let Some(accepted) = accepted {
                        accepted.run().await;
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The answer a fault the test switched on gives instead of the normal one (see
/// `faults.rs`), if any.
fn faulted<B>(inner: &Arc<Inner>, req: &Request<B>) -> Option<Response<Body>> {
    let answer = inner
        .faults
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .answer(req.method() == Method::POST, req.uri().path())?;
    Some(match answer {
        faults::Answer::Unavailable => {
            inner.stats.bump(|s| s.unavailable += 1);
            ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
                "the server is currently unable to handle the request",
            )
            .into_response()
        }
        // What the API server's mux answers for a group it does not serve: not a
        // `Status`, Go's plain-text 404.
        faults::Answer::NotFound => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(full(Bytes::from_static(b"404 page not found\n")))
            .expect("static response parts are valid"),
        faults::Answer::ForbiddenTokenReview(user) => ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "tokenreviews.authentication.k8s.io is forbidden: User \"{user}\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope"
            ),
        )
        .with(
            "details",
            json!({"group": "authentication.k8s.io", "kind": "tokenreviews"}),
        )
        .into_response(),
        faults::Answer::WithoutGroups(groups) => ok_json(&group_list(inner, &groups)),
    })
}

/// One request: who makes it (a 401 if strict authentication refuses them), then
/// port-forwards, reviews, writes and reads.
async fn dispatch(
    inner: &Arc<Inner>,
    req: Request<hyper::body::Incoming>,
    slot: &Mutex<Option<portforward::Accepted>>,
) -> Response<Body> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = inner.rules().user(authorization);
    let Some(user) = user else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
            .into_response();
    };
    if is_portforward(req.uri().path()) {
        return portforward(inner, req, slot);
    }
    let review = match req.uri().path() {
        "/apis/authentication.k8s.io/v1/tokenreviews" => Some(Review::Token),
        "/apis/authorization.k8s.io/v1/subjectaccessreviews" => Some(Review::Access),
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => Some(Review::SelfAccess),
        _ => None,
    };
    match (req.method(), review) {
        (&Method::POST, Some(review)) => post_review(inner, req, review, &user).await,
        (&Method::GET, _) => handle(inner, req, &user),
        (&Method::POST | &Method::PUT | &Method::PATCH | &Method::DELETE, None) => {
            super::write::write(inner, req, &user).await
        }
        _ => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the fake API server does not answer {} here", req.method()),
        )
        .into_response(),
    }
}

#[derive(Clone, Copy)]
enum Review {
    Token,
    Access,
    SelfAccess,
}

/// A review's answer (see `review.rs`).
async fn post_review(
    inner: &Arc<Inner>,
    req: Request<hyper::body::Incoming>,
    review: Review,
    user: &User,
) -> Response<Body> {
    tracing::debug!(uri = %req.uri(), "fake kube-apiserver review");
    let value = match read_json(req.into_body()).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let rules = inner.rules();
    let answer = match review {
        Review::Token => rules.token_review(value),
        Review::Access => rules.access_review(value, None),
        Review::SelfAccess => rules.access_review(value, Some(user)),
    };
    match answer {
        Ok(answer) => json_response(StatusCode::CREATED, to_bytes(&answer)),
        Err(message) => ApiError::invalid(&message).into_response(),
    }
}

/// A request body as JSON, or the 400 the API server gives for one that is not.
pub(super) async fn read_json(body: hyper::body::Incoming) -> Result<Value, ApiError> {
    let body = body
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(&format!("cannot read the body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(&format!("the body is not JSON: {e}")))
}

/// `/api/v1/namespaces/{ns}/pods/{name}/portforward`.
fn is_portforward(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    matches!(
        segments.as_slice(),
        ["api", "v1", "namespaces", _, "pods", _, "portforward"]
    )
}

/// A port-forward request (see `portforward.rs`): refused as the API server refuses
/// it, or answered 101 with the forward left in `slot` for the connection's task to
/// run once upgraded.
fn portforward(
    inner: &Arc<Inner>,
    mut req: Request<hyper::body::Incoming>,
    slot: &Mutex<Option<portforward::Accepted>>,
) -> Response<Body> {
    tracing::debug!(uri = %req.uri(), "fake kube-apiserver port-forward");
    let segments: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let (namespace, name) = (&segments[3], &segments[5]);
    // The API server connects port-forwards on GET (WebSocket) and POST (SPDY).
    if req.method() != Method::GET && req.method() != Method::POST {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake API server forwards ports with GET and a WebSocket upgrade",
        )
        .into_response();
    }
    let ports = match portforward::parse_ports(req.uri().query().unwrap_or("")) {
        Ok(ports) => ports,
        Err(message) => return ApiError::bad_request(&message).into_response(),
    };
    let pod = inner
        .store
        .lock()
        .expect("store lock is not poisoned")
        .get(Kind::Pod, namespace, name)
        .map(|o| o.to_value());
    let Some(pod) = pod else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
        )
        .with("details", json!({"name": name, "kind": "pods"}))
        .into_response();
    };
    if pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty() {
        return ApiError::bad_request(&format!("pod {name} does not have a host assigned"))
            .into_response();
    }
    let handshake = match portforward::handshake(req.headers()) {
        Ok(handshake) => handshake,
        Err(message) => return ApiError::bad_request(&message).into_response(),
    };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let plan = portforward::plan(
        &inner
            .forwards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        namespace,
        name,
        uid,
        &ports,
    );
    *slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(portforward::Accepted {
        upgrade: hyper::upgrade::on(&mut req),
        plan,
    });
    inner.stats.bump(|s| s.port_forwards += 1);
    portforward::switching(&handshake)
        .body(full(Bytes::new()))
        .expect("static response parts are valid")
}

fn handle<B>(inner: &Arc<Inner>, req: Request<B>, user: &User) -> Response<Body> {
    tracing::debug!(method = %req.method(), uri = %req.uri(), "fake kube-apiserver");
    let query = match Query::parse(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let segments: Vec<&str> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let admission = inner.settings().admission;
    match segments.as_slice() {
        ["version"] => Ok(ok_json(&version(&inner.settings().version))),
        ["healthz" | "livez" | "readyz"] => Ok(Response::new(full(Bytes::from_static(b"ok")))),
        ["api"] => Ok(ok_json(&json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": inner.addr.to_string()}
            ],
        }))),
        ["apis"] => Ok(ok_json(&group_list(inner, &[]))),
        ["apis", group] => types::groups(admission)
            .into_iter()
            .find(|(g, _)| g == group)
            .map(|(g, v)| ok_json(&api_group(g, v)))
            .ok_or_else(ApiError::not_found),
        ["api", "v1", rest @ ..] => resource(inner, "v1", rest, &query, user),
        ["apis", group, version, rest @ ..] => {
            resource(inner, &format!("{group}/{version}"), rest, &query, user)
        }
        _ => Err(ApiError::not_found()),
    }
    .unwrap_or_else(ApiError::into_response)
}

/// What a resource path names: the resource, and maybe a namespace and a name.
pub(super) struct Target {
    pub(super) resource: types::Resource,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
}

impl Target {
    /// Reads `[plural]`, `[plural, name]` (cluster-scoped),
    /// `["namespaces", ns, plural]` and `["namespaces", ns, plural, name]`; a resource
    /// not served (or the admission API switched off) is a 404.
    pub(super) fn parse(inner: &Inner, api_version: &str, rest: &[&str]) -> Result<Self, ApiError> {
        let (plural, namespace, name) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, None, Some(*name)),
            ["namespaces", ns, plural] => (*plural, Some(*ns), None),
            ["namespaces", ns, plural, name] => (*plural, Some(*ns), Some(*name)),
            _ => return Err(ApiError::not_found()),
        };
        let resource =
            types::Resource::from_plural(api_version, plural).ok_or_else(ApiError::not_found)?;
        if resource.group() == types::ADMISSION_GROUP && !inner.settings().admission {
            return Err(ApiError::not_found());
        }
        // A namespaced resource is named only inside a namespace, and a cluster-scoped
        // one only outside.
        let named_alone = namespace.is_none() && name.is_some();
        if (resource.namespaced() && named_alone) || (!resource.namespaced() && namespace.is_some())
        {
            return Err(ApiError::not_found());
        }
        Ok(Self {
            resource,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        })
    }

    /// Refuses the request with the API server's 403 unless `user` may `verb` it.
    pub(super) fn authorize(&self, inner: &Inner, user: &User, verb: &str) -> Result<(), ApiError> {
        let ns = self.namespace.as_deref().unwrap_or("");
        let (group, plural) = (self.resource.group(), self.resource.plural());
        inner
            .rules()
            .authorize(user, verb, group, plural, ns)
            .map_err(|why| {
                let what = if group.is_empty() {
                    plural.to_owned()
                } else {
                    format!("{plural}.{group}")
                };
                let named = self
                    .name
                    .as_ref()
                    .map(|n| format!(" \"{n}\""))
                    .unwrap_or_default();
                let scope = if ns.is_empty() {
                    "at the cluster scope".to_owned()
                } else {
                    format!("in the namespace \"{ns}\"")
                };
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    &format!(
                        "{what}{named} is forbidden: User \"{}\" cannot {verb} resource \"{plural}\" in API group \"{group}\" {scope}: {why}",
                        user.name
                    ),
                )
                .with("details", json!({"group": group, "kind": plural}))
            })
    }
}

fn resource(
    inner: &Arc<Inner>,
    api_version: &str,
    rest: &[&str],
    q: &Query,
    user: &User,
) -> Result<Response<Body>, ApiError> {
    if rest.is_empty() {
        let admission = inner.settings().admission;
        return types::resources(api_version, admission)
            .map(|resources| {
                ok_json(&json!({
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": api_version,
                    "resources": resources,
                }))
            })
            .ok_or_else(ApiError::not_found);
    }
    let target = Target::parse(inner, api_version, rest)?;
    let verb = match (&target.name, q.watch) {
        (_, true) => "watch",
        (Some(_), false) => "get",
        (None, false) => "list",
    };
    target.authorize(inner, user, verb)?;
    let ns = target.namespace.as_deref();
    match target.resource {
        types::Resource::Watched(kind) => match (target.name.as_deref(), q.watch) {
            (None, true) => watch(inner, kind, ns, None, q),
            (None, false) => list(inner, kind, ns, q),
            (Some(name), true) => watch(inner, kind, ns, Some(name), q),
            (Some(name), false) => get(inner, kind, ns.unwrap_or_default(), name),
        },
        types::Resource::Stored(t) => match (target.name.as_deref(), q.watch) {
            (_, true) => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("the fake API server does not watch {}", t.plural),
            )),
            (None, false) => list_stored(inner, t, ns, q),
            (Some(name), false) => {
                let obj = inner
                    .store
                    .lock()
                    .expect("store lock is not poisoned")
                    .others
                    .get(t, ns.unwrap_or_default(), name)
                    .cloned();
                match obj {
                    Some(obj) => {
                        inner.stats.bump(|s| s.gets += 1);
                        Ok(ok_json(&obj))
                    }
                    None => Err(ApiError::not_found_named(target.resource, name)),
                }
            }
        },
    }
}

/// A list of a stored type: whole, in key order, with label selectors and the
/// `metadata.*` field selectors.
fn list_stored(
    inner: &Arc<Inner>,
    t: &'static types::Type,
    namespace: Option<&str>,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let labels = match &q.label_selector {
        Some(s) => LabelSelector::parse(s)
            .map_err(|e| ApiError::bad_request(&format!("unable to parse requirement: {e}")))?,
        None => LabelSelector::default(),
    };
    let fields = match &q.field_selector {
        Some(s) => FieldSelector::parse(s, &["metadata.name", "metadata.namespace"])
            .map_err(|e| ApiError::bad_request(&format!("field selector: {e}")))?,
        None => FieldSelector::default(),
    };
    let store = inner.store.lock().expect("store lock is not poisoned");
    let items: Vec<Value> = store
        .others
        .list(t, namespace)
        .into_iter()
        .filter(|o| labels.matches(&types::labels(o)))
        .filter(|o| {
            fields.terms().iter().all(|term| {
                let value = match term.field.as_str() {
                    "metadata.name" => o["metadata"]["name"].as_str(),
                    _ => o["metadata"]["namespace"].as_str(),
                };
                (value.unwrap_or("") == term.value) == term.equal
            })
        })
        .map(|o| {
            // The API server leaves type information out of list items.
            let mut item = o.clone();
            if let Some(map) = item.as_object_mut() {
                map.remove("apiVersion");
                map.remove("kind");
            }
            item
        })
        .collect();
    let rv = store.rv();
    drop(store);
    inner.stats.bump(|s| s.lists += 1);
    Ok(ok_json(&json!({
        "kind": format!("{}List", t.kind),
        "apiVersion": t.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })))
}

// === Query parameters ===

#[derive(Debug, Default)]
struct Query {
    watch: bool,
    resource_version: Option<String>,
    rv_match: Option<String>,
    limit: Option<usize>,
    continue_token: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    timeout: Option<Duration>,
    bookmarks: bool,
    send_initial_events: Option<bool>,
}

impl Query {
    fn parse(query: &str) -> Result<Self, ApiError> {
        let mut q = Query::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let v = v.into_owned();
            match &*k {
                "watch" => q.watch = parse_bool(&k, &v)?,
                "resourceVersion" => q.resource_version = Some(v).filter(|v| !v.is_empty()),
                "resourceVersionMatch" => q.rv_match = Some(v).filter(|v| !v.is_empty()),
                "limit" => q.limit = Some(parse_num(&k, &v)?).filter(|&l| l > 0),
                "continue" => q.continue_token = Some(v).filter(|v| !v.is_empty()),
                "labelSelector" => q.label_selector = Some(v),
                "fieldSelector" => q.field_selector = Some(v),
                "timeoutSeconds" => {
                    q.timeout = Some(Duration::from_secs(parse_num(&k, &v)? as u64));
                }
                "allowWatchBookmarks" => q.bookmarks = parse_bool(&k, &v)?,
                "sendInitialEvents" => q.send_initial_events = Some(parse_bool(&k, &v)?),
                // `pretty`, `timeout` and the rest change nothing a test depends on.
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Booleans as Go's `strconv.ParseBool` reads them.
fn parse_bool(key: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(&format!(
            "invalid boolean value {v:?} for {key}"
        ))),
    }
}

fn parse_num(key: &str, v: &str) -> Result<usize, ApiError> {
    v.parse()
        .map_err(|_| ApiError::bad_request(&format!("invalid integer value {v:?} for {key}")))
}

fn parse_rv(v: &str) -> Result<u64, ApiError> {
    v.parse()
        .map_err(|_| ApiError::bad_request(&format!("invalid resource version: {v:?}")))
}

fn filter(
    kind: Kind,
    namespace: Option<&str>,
    name: Option<&str>,
    q: &Query,
) -> Result<Filter, ApiError> {
    let labels = match &q.label_selector {
        Some(s) => LabelSelector::parse(s)
            .map_err(|e| ApiError::bad_request(&format!("unable to parse requirement: {e}")))?,
        None => LabelSelector::default(),
    };
    let fields = match &q.field_selector {
        Some(s) => FieldSelector::parse(s, kind.selectable_fields()).map_err(|e| {
            ApiError::bad_request(&format!(
                "Unable to find \"{}\" that match label selector \"{}\", field selector \
                 \"{s}\": {e}",
                kind.plural(),
                q.label_selector.as_deref().unwrap_or(""),
            ))
        })?,
        None => FieldSelector::default(),
    };
    Ok(Filter {
        prefix: namespace.map(|ns| format!("{ns}/")).unwrap_or_default(),
        name: name.map(str::to_owned),
        labels,
        fields,
    })
}

// === List ===

/// Where a list is read: the current state or the state at a past resourceVersion.
enum At {
    Current,
    /// `resourceVersionMatch=NotOlderThan`: the current state, if it is that new.
    NotOlderThan(u64),
    Exact(u64),
}

fn list(
    inner: &Arc<Inner>,
    kind: Kind,
    namespace: Option<&str>,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let filter = filter(kind, namespace, None, q)?;
    let token = match &q.continue_token {
        Some(token) => {
            if q.resource_version.is_some() || q.rv_match.is_some() {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let token = ContinueToken::decode(token)
                .map_err(|e| ApiError::bad_request(&format!("continue key is not valid: {e}")))?;
            Some(token)
        }
        None => None,
    };
    let at = match &token {
        // A token with rv -1 is the "inconsistent" continuation a 410 offers: read on
        // at the current state.
        Some(t) if t.rv < 0 => At::Current,
        Some(t) => At::Exact(t.rv as u64),
        None => list_at(q)?,
    };
    let start = token
        .as_ref()
        .map(|t| format!("{}{}", filter.prefix, t.start))
        .unwrap_or_default();

    let store = inner.store.lock().expect("store lock is not poisoned");
    let rv = match at {
        At::Current => store.rv(),
        At::NotOlderThan(rv) if rv <= store.rv() => store.rv(),
        At::NotOlderThan(rv) | At::Exact(rv) => match store.check_rv(kind, rv) {
            Ok(()) => rv,
            Err(RvError::TooLarge { requested, current }) => {
                return Err(ApiError::too_large(requested, current));
            }
            Err(RvError::TooOld { .. }) => {
                drop(store);
                inner.stats.bump(|s| s.gone += 1);
                return Err(match token {
                    Some(t) => ApiError::continue_expired(&t),
                    None => ApiError::gone("The resourceVersion for the provided list is too old."),
                });
            }
        },
    };
    let page = store.list(kind, &filter, rv, &start, q.limit);
    drop(store);

    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(next) = &page.next {
        let start = next
            .strip_prefix(&filter.prefix)
            .expect("listed keys are under the list's prefix");
        metadata["continue"] = ContinueToken::encode(rv as i64, start).into();
    }
    if let Some(n) = page.remaining {
        metadata["remainingItemCount"] = n.into();
    }
    // Written by hand to keep the API server's field order.
    let head = format!(
        r#"{{"kind":"{}List","apiVersion":"{}","metadata":{},"items":["#,
        kind.kind(),
        kind.api_version(),
        metadata,
    );
    let mut out = BytesMut::with_capacity(head.len() + 2 + page.items.len() * 1024);
    out.put_slice(head.as_bytes());
    for (i, obj) in page.items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        obj.write_list_item(&mut out);
    }
    out.put_slice(b"]}");
    inner.stats.bump(|s| s.lists += 1);
    Ok(json_response(StatusCode::OK, out.freeze()))
}

/// Reads `resourceVersion` and `resourceVersionMatch` of a list without `continue`, with
/// the API server's rules: unset means the current state, `"0"` any state (this server
/// has only the current one), and a number without a match is "not older than" — except
/// with `limit`, where it has always meant "exactly".
fn list_at(q: &Query) -> Result<At, ApiError> {
    match (q.resource_version.as_deref(), q.rv_match.as_deref()) {
        (None, None) => Ok(At::Current),
        (None, Some(_)) => Err(ApiError::invalid(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        )),
        (Some("0"), None | Some("NotOlderThan")) => Ok(At::Current),
        (Some("0"), Some("Exact")) => Err(ApiError::invalid(
            "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        )),
        (Some(rv), None) if q.limit.is_some() => Ok(At::Exact(parse_rv(rv)?)),
        (Some(rv), None | Some("NotOlderThan")) => Ok(At::NotOlderThan(parse_rv(rv)?)),
        (Some(rv), Some("Exact")) => Ok(At::Exact(parse_rv(rv)?)),
        (Some(_), Some(other)) => Err(ApiError::invalid(&format!(
            "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \
             \"Exact\", \"NotOlderThan\""
        ))),
    }
}

/// etcd's continue token: base64url (no padding) of `{"v":..,"rv":..,"start":..}`, where
/// `start` is the key to read on from, relative to the list's prefix.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

impl ContinueToken {
    const VERSION: &'static str = "meta.k8s.io/v1";

    fn encode(rv: i64, start: &str) -> String {
        let token = ContinueToken {
            v: Self::VERSION.to_owned(),
            rv,
            start: start.to_owned(),
        };
        let json = serde_json::to_vec(&token).expect("JSON serializes");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(token: &str) -> Result<Self, String> {
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|e| format!("{e}"))?;
        let token: ContinueToken = serde_json::from_slice(&json).map_err(|e| format!("{e}"))?;
        if token.v != Self::VERSION {
            return Err(format!(
                "server does not recognize this encoded key: {}",
                token.v
            ));
        }
        if token.start.is_empty() {
            return Err("encoded start key empty".to_owned());
        }
        if token.rv == 0 || token.rv < -1 {
            return Err("incorrect encoded start resourceVersion".to_owned());
        }
        Ok(token)
    }
}

// === Watch and get ===

fn watch(
    inner: &Arc<Inner>,
    kind: Kind,
    namespace: Option<&str>,
    name: Option<&str>,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let filter = filter(kind, namespace, name, q)?;
    let start = watch_start(q)?;
    let req = WatchRequest {
        kind,
        filter,
        start,
        bookmarks: q.bookmarks,
        timeout: q.timeout.unwrap_or(DEFAULT_WATCH_TIMEOUT),
    };
    match watch::start(inner.clone(), req) {
        Ok(events) => {
            let body = StreamBody::new(events.map(|b| Ok::<_, Infallible>(Frame::data(b))));
            Ok(Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.boxed_unsync())
                .expect("static response parts are valid"))
        }
        // The API server answers a watch from a compacted resourceVersion with a stream
        // holding one ERROR event, not with an HTTP error.
        Err(RvError::TooOld { requested, oldest }) => {
            inner.stats.bump(|s| s.gone += 1);
            let status =
                ApiError::gone(&format!("too old resource version: {requested} ({oldest})"));
            Ok(json_response(
                StatusCode::OK,
                watch::error_line(&status.body),
            ))
        }
        Err(RvError::TooLarge { requested, current }) => {
            Err(ApiError::too_large(requested, current))
        }
    }
}

/// Reads where a watch starts, with the API server's validation of streaming lists.
fn watch_start(q: &Query) -> Result<Start, ApiError> {
    let rv = q.resource_version.as_deref();
    let from_now = matches!(rv, None | Some("0"));
    match q.send_initial_events {
        Some(true) => {
            if !q.bookmarks {
                return Err(ApiError::invalid(
                    "sendInitialEvents: Forbidden: sendInitialEvents requires setting \
                     allowWatchBookmarks to true",
                ));
            }
            if q.rv_match.as_deref() != Some("NotOlderThan") {
                return Err(ApiError::invalid(
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting \
                     resourceVersionMatch to NotOlderThan",
                ));
            }
            let not_older_than = match rv {
                None | Some("0") => 0,
                Some(rv) => parse_rv(rv)?,
            };
            Ok(Start::Now {
                not_older_than,
                initial_events: true,
                end_bookmark: true,
            })
        }
        Some(false) => {
            if q.rv_match.as_deref().is_some_and(|m| m != "NotOlderThan") {
                return Err(ApiError::invalid(
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting \
                     resourceVersionMatch to NotOlderThan",
                ));
            }
            match rv {
                _ if from_now => Ok(Start::Now {
                    not_older_than: 0,
                    initial_events: false,
                    end_bookmark: false,
                }),
                Some(rv) => Ok(Start::After(parse_rv(rv)?)),
                None => unreachable!("from_now covers None"),
            }
        }
        None => {
            if q.rv_match.is_some() {
                return Err(ApiError::invalid(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for \
                     watch unless sendInitialEvents is provided",
                ));
            }
            match rv {
                // The legacy start: synthetic ADDED events for the current state, then
                // changes, with no marker between the two.
                _ if from_now => Ok(Start::Now {
                    not_older_than: 0,
                    initial_events: true,
                    end_bookmark: false,
                }),
                Some(rv) => Ok(Start::After(parse_rv(rv)?)),
                None => unreachable!("from_now covers None"),
            }
        }
    }
}

fn get(
    inner: &Arc<Inner>,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let obj = inner
        .store
        .lock()
        .expect("store lock is not poisoned")
        .get(kind, namespace, name);
    match obj {
        Some(obj) => {
            inner.stats.bump(|s| s.gets += 1);
            Ok(json_response(StatusCode::OK, obj.json.clone()))
        }
        None => Err(ApiError::not_found_named(
            types::Resource::Watched(kind),
            name,
        )),
    }
}

// === Discovery ===

fn version((major, minor): &(String, String)) -> Value {
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{major}.{minor}.0-mesh-fake"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/apis`: every group served, less `unserved` (groups a fault took away).
fn group_list(inner: &Inner, unserved: &[&str]) -> Value {
    let admission = inner.settings().admission;
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": types::groups(admission)
            .into_iter()
            .filter(|(g, _)| !unserved.contains(g))
            .map(|(g, v)| api_group(g, v))
            .collect::<Vec<_>>(),
    })
}

/// An `APIGroup` with its one version.
fn api_group(group: &str, version: &str) -> Value {
    let v = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [v],
        "preferredVersion": v,
    })
}

// === Responses ===

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed_unsync()
}

fn to_bytes(value: &Value) -> Bytes {
    serde_json::to_vec(value).expect("JSON serializes").into()
}

pub(super) fn json_response(code: StatusCode, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("static response parts are valid")
}

pub(super) fn ok_json(value: &Value) -> Response<Body> {
    json_response(StatusCode::OK, to_bytes(value))
}

// === Errors ===

/// An error answered as the API server answers errors: a `Status` object with the
/// matching HTTP status.
pub(super) struct ApiError {
    code: StatusCode,
    pub(super) body: Value,
}

impl ApiError {
    pub(super) fn new(code: StatusCode, reason: &str, message: &str) -> Self {
        let body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        });
        Self { code, body }
    }

    pub(super) fn with(mut self, field: &str, value: Value) -> Self {
        self.body[field] = value;
        self
    }

    pub(super) fn bad_request(message: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub(super) fn invalid(message: &str) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
    }

    /// `plural "name" not found`, as a GET of a missing object gets it.
    pub(super) fn not_found_named(resource: types::Resource, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} \"{name}\" not found", resource.plural()),
        )
        .with(
            "details",
            json!({"name": name, "group": resource.group(), "kind": resource.plural()}),
        )
    }

    pub(super) fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    fn gone(message: &str) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    /// The 410 for a continue token whose snapshot was compacted. Like the API server,
    /// it offers a token to read on from the current state, accepting an inconsistent
    /// list.
    fn continue_expired(token: &ContinueToken) -> Self {
        Self::gone(
            "The provided continue parameter is too old to display a consistent list \
             result. You can start a new list without the continue parameter, or use the \
             continue token in this response to retrieve the remainder of the results. \
             Continuing with the provided token results in an inconsistent list - objects \
             that were created, modified, or deleted between the time the first chunk was \
             returned and now may show up in the list.",
        )
        .with(
            "metadata",
            json!({"continue": ContinueToken::encode(-1, &token.start)}),
        )
    }

    fn too_large(requested: u64, current: u64) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            &format!("Too large resource version: {requested}, current: {current}"),
        )
        .with(
            "details",
            json!({
                "causes": [{
                    "reason": "ResourceVersionTooLarge",
                    "message": "Too large resource version",
                }],
                "retryAfterSeconds": 1,
            }),
        )
    }

    pub(super) fn into_response(self) -> Response<Body> {
        json_response(self.code, to_bytes(&self.body))
    }
}
