//! The controller's admin server (port 9990): `/metrics` in the Prometheus text
//! format, `/ready` (503 until the index has its first full sync, so a rollout waits
//! for a controller that can answer) and `/live`.

use crate::{index::Index, metrics::Metrics};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the admin server reports on.
#[derive(Clone, Debug)]
pub struct Admin {
    pub index: Index,
    pub metrics: Arc<Metrics>,
}

impl Admin {
    /// Serves admin requests on `listener` until `shutdown` is cancelled.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        crate::http_server::serve("admin", listener, shutdown, move |req| {
            std::future::ready(self.handle(&req))
        })
        .await;
    }

    /// Answers one admin request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match req.uri().path() {
            "/metrics" if get => {
                let mut rsp = text(StatusCode::OK, self.metrics.render(&self.index));
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                rsp
            }
            "/live" if get => text(StatusCode::OK, "live\n"),
            "/ready" if get => match self.index.is_ready() {
                true => text(StatusCode::OK, "ready\n"),
                false => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            },
            "/metrics" | "/live" | "/ready" => {
                let mut rsp = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
                rsp.headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
                rsp
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Resource;

    fn get(admin: &Admin, path: &str) -> (StatusCode, String) {
        let req = Request::get(path).body(()).unwrap();
        let rsp = admin.handle(&req);
        let status = rsp.status();
        let body = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
            rsp.into_body(),
        ))
        .unwrap()
        .unwrap()
        .to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn ready_follows_the_index() {
        let admin = Admin {
            index: Index::new("cluster.local", "cluster.local"),
            metrics: Arc::default(),
        };
        assert_eq!(get(&admin, "/ready").0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get(&admin, "/live").0, StatusCode::OK);
        admin.index.ready_once_synced(&Resource::ALL);
        for r in Resource::ALL {
            admin.index.synced(r);
        }
        assert_eq!(get(&admin, "/ready").0, StatusCode::OK);
        assert_eq!(get(&admin, "/nope").0, StatusCode::NOT_FOUND);
        let post = Request::post("/ready").body(()).unwrap();
        assert_eq!(admin.handle(&post).status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn metrics_exposition() {
        let admin = Admin {
            index: Index::new("cluster.local", "cluster.local"),
            metrics: Arc::default(),
        };
        admin.index.record_watch_restart(Resource::Pods);
        admin.metrics.stream_opened(crate::metrics::StreamKind::Get);
        admin.metrics.update_sent();
        let (status, body) = get(&admin, "/metrics");
        assert_eq!(status, StatusCode::OK);
        for line in [
            "destination_streams{kind=\"get\"} 1",
            "destination_streams{kind=\"profile\"} 0",
            "destination_updates_sent_total 1",
            "destination_watch_restarts_total{resource=\"pods\"} 1",
            "destination_watch_restarts_total{resource=\"services\"} 0",
            "destination_index_objects{resource=\"endpointslices\"} 0",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "missing {line:?} in\n{body}"
            );
        }
        // Every sample has a HELP and TYPE before it.
        let mut typed = std::collections::HashSet::new();
        for l in body.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "{name} has no TYPE");
            }
        }
    }
}
