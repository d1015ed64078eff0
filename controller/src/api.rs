//! The controller's HTTP API (port 8084): JSON under `/api/...`, what the CLI and the
//! dashboard read. Today it answers `GET /api/version`; the metrics API and the
//! dashboard are served here as they come.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The controller's version, as `mesh version` shows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    crate::http_server::serve("api", listener, shutdown, handle).await;
}

/// Answers one API request.
pub fn handle<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match req.uri().path() {
        "/api/version" if get => json(
            StatusCode::OK,
            serde_json::json!({ "version": VERSION }).to_string(),
        ),
        "/api/version" => {
            let mut rsp = json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"use GET"}"#.to_string(),
            );
            rsp.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            rsp
        }
        path => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no such endpoint: {path}") }).to_string(),
        ),
    }
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

    fn call(method: Method, path: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let rsp = handle(&req);
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
}
