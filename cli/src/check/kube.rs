//! The API server as `mesh check` meets it: one probe (`GET /version`, which also
//! gives the version and the server's clock), and what an error from it means, in
//! words: unreachable, 401, 403, 404 or another answer, with what to run.

use http_body_util::BodyExt as _;
use std::time::SystemTime;

/// What the probe learned.
pub(crate) struct Server {
    /// `/version`'s `major` and `minor`, as given (`"1"`, `"31+"`).
    pub(crate) major: String,
    pub(crate) minor: String,
    pub(crate) git_version: String,
    /// The server's clock minus ours, in seconds, if it sent a `Date` (rounded to
    /// the second it has).
    pub(crate) skew_secs: Option<i64>,
}

/// `GET /version`: the API answers, with its version and its clock; an error says
/// what failed and what to do.
pub(crate) async fn probe(client: &kube::Client, cluster: &str) -> Result<Server, String> {
    let request = http::Request::get("/version")
        .body(Vec::new().into())
        .map_err(|e| format!("cannot build a request: {e}"))?;
    let before = SystemTime::now();
    let response = client
        .send(request)
        .await
        .map_err(|e| explain(&e, &format!("cannot query the Kubernetes API of {cluster}")))?;
    let after = SystemTime::now();
    let status = response.status();
    let date = response
        .headers()
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok());
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("the Kubernetes API of {cluster} broke off its answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let status: kube::core::Status =
            serde_json::from_slice(&body).unwrap_or_else(|_| kube::core::Status {
                code: status.as_u16(),
                message: String::from_utf8_lossy(&body).trim().to_owned(),
                ..Default::default()
            });
        let error = kube::Error::Api(Box::new(kube::core::Status {
            code: status.code.max(1),
            ..status
        }));
        return Err(explain(
            &error,
            &format!("cannot query the Kubernetes API of {cluster}"),
        ));
    }
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        format!("the Kubernetes API of {cluster} answered /version with something not JSON: {e}")
    })?;
    let field = |name: &str| doc[name].as_str().unwrap_or_default().to_owned();
    // The server's Date is truncated to the second: compare with the middle of the
    // request, and read only whole seconds of skew.
    let skew_secs = date.map(|server| {
        let middle = before + after.duration_since(before).unwrap_or_default() / 2;
        match server.duration_since(middle) {
            Ok(ahead) => ahead.as_secs_f64().round() as i64,
            Err(behind) => -(behind.duration().as_secs_f64().round() as i64),
        }
    });
    Ok(Server {
        major: field("major"),
        minor: field("minor"),
        git_version: field("gitVersion"),
        skew_secs,
    })
}

/// What a failed request means, `doing` first: an API answer by its status (the
/// credentials refused, a permission missing, a resource not served), anything else as
/// the API server not reached, with the whole chain of causes (never a debug dump).
pub(crate) fn explain(error: &kube::Error, doing: &str) -> String {
    match error {
        kube::Error::Api(status) => {
            let said = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            match status.code {
                401 => format!(
                    "{doing}: the API server refused the kubeconfig's credentials (401 \
                     Unauthorized: {said}); log in again or fix the user of the kubeconfig's \
                     context (`kubectl auth whoami` shows who you are)"
                ),
                403 => format!(
                    "{doing}: forbidden (403: {said}); ask a cluster administrator for a role \
                     that allows it (`kubectl auth can-i --list` shows what you may do)"
                ),
                404 => format!("{doing}: not found (404: {said})"),
                code => format!("{doing}: the API server answered {code}: {said}"),
            }
        }
        other => format!(
            "{doing}: the API server does not answer: {}; is the cluster up, and is the \
             kubeconfig's server address right?",
            chain(other)
        ),
    }
}

/// An error and its sources, joined with `: `.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// Whether an error is the API's 404 (the object or resource is not there).
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn each_failure_is_named_for_what_it_is() {
        let e = explain(&api(401, "Unauthorized"), "cannot list pods");
        assert!(e.starts_with("cannot list pods: the API server refused the kubeconfig's credentials (401 Unauthorized: Unauthorized)"), "{e}");
        let e = explain(&api(403, "pods is forbidden"), "cannot list pods");
        assert!(
            e.starts_with(
                "cannot list pods: forbidden (403: pods is forbidden); ask a cluster administrator"
            ),
            "{e}"
        );
        let e = explain(&api(404, "not found"), "cannot get x");
        assert_eq!(e, "cannot get x: not found (404: not found)");
        let e = explain(&api(500, "boom"), "cannot get x");
        assert_eq!(e, "cannot get x: the API server answered 500: boom");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = explain(&kube::Error::Service(Box::new(io)), "cannot get x");
        assert!(
            e.contains("the API server does not answer: ") && e.contains("connection refused"),
            "{e}"
        );
        assert!(!e.contains("Service("), "not a debug dump: {e}");
    }
}
