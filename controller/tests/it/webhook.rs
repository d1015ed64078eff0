//! The ServiceProfile admission webhook in-process, over real TLS on loopback, called
//! as the API server calls it: HTTP/1.1 or HTTP/2, a client that trusts only the
//! webhook's certificate.

use bytes::Bytes;
use clap::Parser as _;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_controller::{
    webhook::{Outcome, PATH, POLICY_PATH},
    Args, Config, Running,
};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, ServerName};
use serde_json::{json, Value};
use std::{net::SocketAddr, path::Path, sync::Arc};

const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

/// A self-signed certificate for 127.0.0.1, as PEM: (certificate, key).
pub(super) fn self_signed() -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// Writes a file as Kubernetes updates a Secret volume: a new file renamed over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Fixture {
    running: Running,
    addr: SocketAddr,
    cert_pem: String,
    dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = self_signed();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    std::fs::write(dir.path().join("discovery.yaml"), "services: []\n").unwrap();
    // Flags, as an operator gives them: the webhook is on because both files are.
    let args = Args::try_parse_from([
        "mesh-controller",
        "--backend=file",
        &format!("--file={}", dir.path().join("discovery.yaml").display()),
        "--destination-addr=127.0.0.1:0",
        "--admin-addr=127.0.0.1:0",
        // Not the default 0.0.0.0:8084, which tests running side by side would share.
        "--api-addr=127.0.0.1:0",
        // Nor the tap API's default 127.0.0.1:8088.
        "--tap-addr=127.0.0.1:0",
        "--webhook-addr=127.0.0.1:0",
        &format!("--webhook-cert={}", cert.display()),
        &format!("--webhook-key={}", key.display()),
    ])
    .unwrap();
    let config = args.into_config().unwrap();
    let running = config.build().await.unwrap();
    let addr = running.webhook_addr.expect("the webhook is on");
    Fixture {
        running,
        addr,
        cert_pem,
        dir,
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Proto {
    Http1,
    Http2,
}

/// POSTs `body` to `path` over TLS, trusting only `trusted` (PEM).
pub(super) async fn post(
    addr: SocketAddr,
    trusted: &str,
    proto: Proto,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trusted.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match proto {
        Proto::Http1 => b"http/1.1".to_vec(),
        Proto::Http2 => b"h2".to_vec(),
    }];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let server_name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let io = TokioIo::new(tls);
    let req = Request::post(format!("https://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let rsp = match proto {
        Proto::Http1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await
        }
        Proto::Http2 => {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await
        }
    }
    .map_err(|e| format!("request: {e}"))?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, body))
}

impl Fixture {
    async fn post(&self, proto: Proto, body: Vec<u8>) -> (StatusCode, Bytes) {
        post(self.addr, &self.cert_pem, proto, PATH, body)
            .await
            .unwrap()
    }

    /// Reviews `object` and returns the `response` of the answer.
    async fn review(&self, proto: Proto, operation: &str, object: Value) -> Value {
        let (status, body) = self.post(proto, review(operation, object)).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], UID);
        answer["response"].clone()
    }

    async fn denied(&self, proto: Proto, object: Value) -> String {
        let response = self.review(proto, "CREATE", object).await;
        assert_eq!(response["allowed"], false, "{response}");
        assert_eq!(response["status"]["code"], 400, "{response}");
        response["status"]["message"].as_str().unwrap().to_string()
    }
}

fn review(operation: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "mesh.rs", "version": "v1alpha1", "kind": "ServiceProfile"},
            "resource": {"group": "mesh.rs", "version": "v1alpha1", "resource": "serviceprofiles"},
            "name": "web.default.svc.cluster.local",
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    }))
    .unwrap()
}

fn profile(spec: Value) -> Value {
    json!({
        "apiVersion": "mesh.rs/v1alpha1",
        "kind": "ServiceProfile",
        "metadata": {
            "name": "web.default.svc.cluster.local",
            "namespace": "default",
            "creationTimestamp": null,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "spec": spec,
    })
}

fn valid() -> Value {
    profile(json!({
        "routes": [{
            "name": "GET /books/{id}",
            "condition": {"method": "GET", "pathRegex": "/books/[^/]*"},
            "responseClasses": [{"condition": {"status": {"min": 500, "max": 599}}, "isFailure": true}],
            "isRetryable": true,
            "timeout": "300ms",
        }],
        "retryBudget": {"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"},
    }))
}

#[tokio::test]
async fn a_valid_profile_is_allowed() {
    let f = start().await;
    for proto in [Proto::Http1, Proto::Http2] {
        let response = f.review(proto, "CREATE", valid()).await;
        assert_eq!(response["allowed"], true, "{proto:?}: {response}");
        let response = f.review(proto, "UPDATE", valid()).await;
        assert_eq!(response["allowed"], true, "{proto:?}: {response}");
    }
    assert_eq!(f.running.webhook_reviews.total(Outcome::Allowed), 4);
}

#[tokio::test]
async fn invalid_profiles_are_denied_with_the_field_path() {
    let f = start().await;
    let bad_regex =
        profile(json!({"routes": [{"name": "a", "condition": {"pathRegex": "/books/(["}}]}));
    let message = f.denied(Proto::Http1, bad_regex).await;
    assert!(
        message.starts_with("spec.routes[0].condition.pathRegex: "),
        "{message}"
    );

    let min_over_max = profile(json!({"routes": [{
        "name": "a",
        "condition": {"method": "GET"},
        "responseClasses": [{"condition": {"status": {"min": 500, "max": 400}}}],
    }]}));
    let message = f.denied(Proto::Http2, min_over_max).await;
    assert!(
        message.starts_with("spec.routes[0].responseClasses[0].condition.status"),
        "{message}"
    );

    let unknown_field = profile(json!({"routes": [{
        "name": "a",
        "condition": {"method": "GET", "pathRegexp": "/"},
    }]}));
    let message = f.denied(Proto::Http1, unknown_field).await;
    assert!(
        message.starts_with("spec.routes[0].condition.pathRegexp: unknown field"),
        "{message}"
    );

    // Every problem is reported, one per line.
    let several = profile(json!({"routes": [
        {"name": "", "condition": {"method": "GET"}},
        {"name": "b", "condition": {"method": "GET"}, "timeout": "soon"},
    ]}));
    let message = f.denied(Proto::Http1, several).await;
    assert!(message.lines().count() >= 2, "{message}");
    assert!(
        message
            .lines()
            .any(|l| l.starts_with("spec.routes[1].timeout: ")),
        "{message}"
    );

    // The name must be the FQDN of a service in the controller's cluster domain.
    let mut wrong_name = valid();
    wrong_name["metadata"]["name"] = json!("web.default.svc.example.org");
    let message = f.denied(Proto::Http1, wrong_name).await;
    assert!(message.starts_with("metadata.name: "), "{message}");

    // Several decoding problems (a weight with a fraction, which the CRD's schema
    // refuses too; a number for a duration; a string for a boolean): every one.
    let undecodable = profile(json!({
        "routes": [{"name": "a", "condition": {"method": "GET"}, "timeout": 5, "isRetryable": "maybe"}],
        "dstOverrides": [{"authority": "web.default.svc.cluster.local", "weight": 0.5}],
    }));
    let message = f.denied(Proto::Http1, undecodable).await;
    let paths: Vec<&str> = message
        .lines()
        .map(|l| l.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        [
            "spec.dstOverrides[0].weight",
            "spec.routes[0].isRetryable",
            "spec.routes[0].timeout"
        ],
        "{message}"
    );
    assert!(message.contains("\"500m\""), "{message}");

    // A profile named for another namespace's service is refused, not accepted and
    // ignored; judged in the request's namespace when the object does not say it.
    let mut elsewhere = valid();
    elsewhere["metadata"]["name"] = json!("web.other.svc.cluster.local");
    elsewhere["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    let message = f.denied(Proto::Http2, elsewhere).await;
    assert!(
        message.starts_with("metadata.name: ")
            && message.contains("in namespace \"default\"")
            && message.contains("must live in its service's namespace"),
        "{message}"
    );

    assert_eq!(f.running.webhook_reviews.total(Outcome::Denied), 7);
}

#[tokio::test]
async fn delete_is_allowed() {
    let f = start().await;
    let broken = profile(json!({"routes": [{"name": "a", "condition": {"pathRegex": "(["}}]}));
    let response = f.review(Proto::Http1, "DELETE", broken).await;
    assert_eq!(response["allowed"], true, "{response}");
    let response = f.review(Proto::Http2, "DELETE", Value::Null).await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn bodies_that_are_not_reviews_get_400() {
    let f = start().await;
    for body in [
        &b"garbage"[..],
        b"{\"apiVersion\": \"admission.k8s.io/v1\"",
        b"{\"apiVersion\": \"v1\", \"kind\": \"Pod\"}",
        b"",
    ] {
        let (status, message) = f.post(Proto::Http1, body.to_vec()).await;
        let message = String::from_utf8_lossy(&message);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        assert!(message.starts_with("invalid AdmissionReview"), "{message}");
    }
    assert_eq!(f.running.webhook_reviews.total(Outcome::Error), 4);
    let (status, _) = post(f.addr, &f.cert_pem, Proto::Http1, "/mutate", vec![])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    let f = start().await;
    let mut big = review("CREATE", valid());
    big.resize(2 * 1024 * 1024, b' ');
    for proto in [Proto::Http1, Proto::Http2] {
        let (status, message) = f.post(proto, big.clone()).await;
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{proto:?}: {}",
            String::from_utf8_lossy(&message)
        );
    }
    // Just under the limit is read and judged.
    let mut fits = review("CREATE", valid());
    fits.resize(mesh_controller::webhook::MAX_BODY, b' ');
    let (status, _) = f.post(Proto::Http1, fits).await;
    assert_eq!(status, StatusCode::OK);
}

/// A rotated certificate is served by the next connection, without a restart.
#[tokio::test]
async fn the_certificate_is_reloaded_when_it_changes() {
    let f = start().await;
    let (new_cert, new_key) = self_signed();
    // The old certificate is still served: a client trusting only the new one fails.
    assert!(post(
        f.addr,
        &new_cert,
        Proto::Http1,
        PATH,
        review("DELETE", Value::Null)
    )
    .await
    .is_err());
    // Key first, then certificate: in between, the pair does not match and the old
    // pair stays in force.
    replace(&f.dir.path().join("tls.key"), &new_key);
    let (status, _) = f.post(Proto::Http1, review("DELETE", Value::Null)).await;
    assert_eq!(status, StatusCode::OK, "the old pair is still served");
    replace(&f.dir.path().join("tls.crt"), &new_cert);
    let (status, _) = post(
        f.addr,
        &new_cert,
        Proto::Http2,
        PATH,
        review("DELETE", Value::Null),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(post(
        f.addr,
        &f.cert_pem,
        Proto::Http1,
        PATH,
        review("DELETE", Value::Null)
    )
    .await
    .is_err());
}

#[tokio::test]
async fn shutdown_stops_the_webhook() {
    let f = start().await;
    f.running.shutdown();
    let addr = f.addr;
    f.running.wait().await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn the_webhook_is_off_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::local(dir.path().join("discovery.yaml"));
    let running = config.build().await.unwrap();
    assert_eq!(running.webhook_addr, None);
    running.shutdown();
    running.wait().await.unwrap();
}

#[test]
fn flags_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = self_signed();
    let (_, other_key) = self_signed();
    let path = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (cert, key, other, junk) = (
        path("tls.crt", &cert_pem),
        path("tls.key", &key_pem),
        path("other.key", &other_key),
        path("junk", "not pem\n"),
    );
    let missing = dir.path().join("missing").display().to_string();
    let discovery = path("discovery.yaml", "services: []\n");
    let file_flag = format!("--file={discovery}");
    let parse = |args: &[&str]| {
        let args = Args::try_parse_from(
            ["mesh-controller", "--backend=file", &file_flag]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .map_err(|e| e.to_string())?;
        args.into_config().map_err(|e| e.to_string())
    };
    let config = parse(&["--webhook-cert", &cert, "--webhook-key", &key]).unwrap();
    let webhook = config.webhook.expect("both files given");
    assert_eq!(webhook.addr, "0.0.0.0:8443".parse().unwrap());
    assert!(parse(&[]).unwrap().webhook.is_none());

    for (args, needle) in [
        (vec!["--webhook-cert", &cert], "--webhook-key is required"),
        (vec!["--webhook-key", &key], "--webhook-cert is required"),
        (
            vec!["--webhook-cert", &missing, "--webhook-key", &key],
            "--webhook-cert",
        ),
        (
            vec!["--webhook-cert", &junk, "--webhook-key", &key],
            "--webhook-cert",
        ),
        (
            vec!["--webhook-cert", &cert, "--webhook-key", &junk],
            "--webhook-key",
        ),
        (
            vec!["--webhook-cert", &cert, "--webhook-key", &other],
            "--webhook-key",
        ),
        (vec!["--webhook-addr", "nope"], "--webhook-addr"),
    ] {
        let error = parse(&args).unwrap_err();
        assert!(error.contains(needle), "{args:?}: {error}");
    }
}

/// A policy kind's review, as the API server sends it to `/validate/policy`.
fn policy_review(operation: &str, kind: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "policy.mesh.rs", "version": "v1alpha1", "kind": kind},
            "namespace": "shop",
            "operation": operation,
            "object": object,
            "oldObject": null,
        }
    }))
    .unwrap()
}

async fn review_policy(
    f: &Fixture,
    proto: Proto,
    operation: &str,
    kind: &str,
    object: Value,
) -> Value {
    let (status, body) = post(
        f.addr,
        &f.cert_pem,
        proto,
        POLICY_PATH,
        policy_review(operation, kind, object),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["uid"], UID);
    answer["response"].clone()
}

#[tokio::test]
async fn policy_kinds_are_validated_with_their_field_paths() {
    let f = start().await;
    // No namespace in the object: judged in the request's (`shop`).
    let policy = |target: Value, refs: Value| {
        json!({
            "apiVersion": "policy.mesh.rs/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "uid": "x", "managedFields": []},
            "spec": {"targetRef": target, "requiredAuthenticationRefs": refs},
        })
    };
    for proto in [Proto::Http1, Proto::Http2] {
        let good = policy(
            json!({"kind": "Namespace", "name": "shop"}),
            json!([{"group": "policy.mesh.rs", "kind": "MeshTLSAuthentication", "name": "web"}]),
        );
        let response = review_policy(&f, proto, "CREATE", "AuthorizationPolicy", good).await;
        assert_eq!(response["allowed"], true, "{proto:?}: {response}");
    }
    let bad = policy(
        json!({"kind": "Namespace", "name": "other"}),
        json!([{"kind": "NetworkAuthentication", "name": "lan"}]),
    );
    let response = review_policy(
        &f,
        Proto::Http1,
        "UPDATE",
        "AuthorizationPolicy",
        bad.clone(),
    )
    .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 400);
    assert_eq!(
        response["status"]["message"],
        "spec.targetRef.name: a Namespace target must be the policy's own namespace \"shop\", found \"other\"\n\
         spec.requiredAuthenticationRefs[0].group: missing: an empty group means the core group, which has no NetworkAuthentication; write `group: policy.mesh.rs`"
    );
    let server = json!({
        "apiVersion": "policy.mesh.rs/v1alpha1", "kind": "Server",
        "metadata": {"name": "s"},
        "spec": {"podSelector": {}, "port": 0, "proxyProtocol": "HTTP/1", "accessPolicy": "allow"},
    });
    let response = review_policy(&f, Proto::Http2, "CREATE", "Server", server).await;
    assert_eq!(
        response["status"]["message"],
        "spec.port: 0 is not a port: expected 1-65535 or a port name\n\
         spec.accessPolicy: \"allow\" is not a default inbound policy: expected one of all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny, audit"
    );
    // Removing is always allowed; another kind sent here is named.
    let response = review_policy(&f, Proto::Http1, "DELETE", "AuthorizationPolicy", bad).await;
    assert_eq!(response["allowed"], true);
    let response =
        review_policy(&f, Proto::Http1, "CREATE", "ServerAuthorization", json!({})).await;
    assert_eq!(
        response["status"]["message"],
        "request.kind: this webhook validates policy.mesh.rs objects, not policy.mesh.rs/ServerAuthorization"
    );
    assert_eq!(f.running.webhook_reviews.total(Outcome::Allowed), 3);
    assert_eq!(f.running.webhook_reviews.total(Outcome::Denied), 3);
}
