//! The one place that decides whether a response succeeded.
//!
//! Metrics, retries (behind a route's own response classes, `profile::Route::classify`)
//! and the balancer's failure-aware cost all ask it, so that what the proxy counts as a
//! failure, what it retries and what it balances away from can never disagree.

use http::{HeaderMap, StatusCode};

/// A response's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Success,
    Failure,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// Whether a request is gRPC, judged by its content type.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` code carried in headers or trailers, if any.
pub fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    let v = headers.get("grpc-status")?;
    std::str::from_utf8(v.as_bytes()).ok()?.trim().parse().ok()
}

/// Whether a synthetic response with `error` label was caused by the client (its
/// request body failed): such a response is never the server's failure, whatever its
/// status or the route's response classes say, so a broken client cannot make a
/// healthy service look failing.
pub fn is_client_fault(error: &str) -> bool {
    error == crate::errors::REQUEST_BODY
}

/// Classifies a finished response.
///
/// A gRPC status decides when there is one: any code but OK (0) is a failure. A gRPC
/// call whose stream ended without a status is a failure too, since the protocol
/// requires one. Otherwise a 5xx is a failure and everything else a success: 4xx
/// answers are the client's problem, not the server's health.
pub fn classify(status: StatusCode, grpc: bool, grpc_status: Option<u16>) -> Class {
    match grpc_status {
        Some(0) => Class::Success,
        Some(_) => Class::Failure,
        None if status.is_server_error() => Class::Failure,
        None if grpc && status == StatusCode::OK => Class::Failure,
        None => Class::Success,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses() {
        assert_eq!(classify(StatusCode::OK, false, None), Class::Success);
        assert_eq!(classify(StatusCode::NOT_FOUND, false, None), Class::Success);
        assert_eq!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, false, None),
            Class::Failure
        );
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, false, None),
            Class::Failure
        );
    }

    #[test]
    fn grpc_codes() {
        assert_eq!(classify(StatusCode::OK, true, Some(0)), Class::Success);
        assert_eq!(classify(StatusCode::OK, true, Some(13)), Class::Failure);
        assert_eq!(classify(StatusCode::OK, true, Some(5)), Class::Failure);
        assert_eq!(classify(StatusCode::OK, true, None), Class::Failure);
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, true, None),
            Class::Failure
        );
    }

    #[test]
    fn reads_grpc_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(grpc_status(&h), Some(14));
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(grpc_status(&h), None);
        h.insert(
            http::header::CONTENT_TYPE,
            "application/grpc+proto".parse().unwrap(),
        );
        assert!(is_grpc(&h));
    }
}
