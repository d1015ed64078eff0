//! The controller's HTTP API (port 8084): JSON under `/api/...`, what the CLI and the
//! dashboard read: `GET /api/version`, and the metrics API, answered from what the
//! scraper ([`crate::scrape`]) keeps of the proxies' metrics:
//!
//! - `/api/stat?resource=deploy[/NAME]&namespace=NS&window=1m[&to=TYPE/NAME][&from=TYPE/NAME][&to_namespace=NS][&from_namespace=NS]`
//! - `/api/edges?resource=deploy&namespace=NS&window=1m`
//! - `/api/routes?[resource=svc[/NAME]]&namespace=NS&window=1m[&from=TYPE/NAME][&from_namespace=NS]`
//! - `/api/metrics`: the same aggregates in Prometheus text, for a Prometheus to federate.
//!
//! No `namespace` means every namespace; `window` is a Go duration (default `1m`), at
//! most what the controller keeps (`10m`). A parameter that is unknown, repeated or
//! invalid is a 400 whose JSON `error` says which and why.

use crate::scrape::Store;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use mesh_core::stats::{EdgesQuery, ResourceKind, RoutesQuery, Selector, StatQuery};
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The controller's version, as `mesh version` shows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The window a query that names none is over (Linkerd's default).
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// The endpoints, all read-only.
const PATHS: [&str; 5] = [
    "/api/version",
    "/api/stat",
    "/api/edges",
    "/api/routes",
    "/api/metrics",
];

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, store: Arc<Store>, shutdown: CancellationToken) {
    crate::http_server::serve("api", listener, shutdown, move |req| handle(req, &store)).await;
}

/// A request the API refuses, and why.
#[derive(Debug)]
struct BadRequest(String);

/// A request's query parameters, each taken once; what is left over is an error.
struct Params(HashMap<String, String>);

/// Answers one API request.
pub fn handle<B>(req: &Request<B>, store: &Store) -> Response<Full<Bytes>> {
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
        "/api/edges" => edges(req, store),
        _ => routes(req, store),
    };
    match answer {
        Ok(body) => json(StatusCode::OK, body),
        Err(BadRequest(message)) => error(StatusCode::BAD_REQUEST, &message),
    }
}

fn stat<B>(req: &Request<B>, store: &Store) -> Result<String, BadRequest> {
    let mut p = Params::of(req)?;
    let namespace = p.take("namespace")?;
    let resource = p.required("resource")?;
    let selector = selector("resource", &resource, namespace.as_deref())?;
    let mut query = StatQuery::new(selector, p.window()?);
    query.to = p.peer("to", namespace.as_deref())?;
    query.from = p.peer("from", namespace.as_deref())?;
    p.done()?;
    let stats = store.lock();
    to_json(stats.stat(&query, store.now()))
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
    use http_body_util::BodyExt as _;
    use mesh_core::stats::Limits;

    fn call(method: Method, path: &str) -> (StatusCode, serde_json::Value) {
        let store = Store::new(Limits::default());
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let rsp = handle(&req, &store);
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
        let (status, body) = call(Method::GET, "/api/routes?resource=svc%2Fweb&namespace=demo");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["routes"], serde_json::json!([]));
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
        ];
        for (path, why) in cases {
            let (status, body) = call(Method::GET, path);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            let message = body["error"].as_str().unwrap();
            assert!(message.contains(why), "{path}: {message}");
        }
    }
}
