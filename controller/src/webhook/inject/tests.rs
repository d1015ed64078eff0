//! The injector's reviews, by themselves and over real HTTPS on loopback (HTTP/1.1
//! and HTTP/2, a client trusting only the webhook's certificate), with a fake
//! [`Cluster`] standing for the API server's lookups.

use super::*;
use crate::webhook::{self, tls, Reviews, Webhook};
use bytes::Bytes;
use http::{Request as HttpRequest, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::install::meta;
use rustls_pki_types::{pem::PemObject as _, CertificateDer, ServerName};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";
const ANCHORS: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// Namespaces by name, and each (kind, name)'s controller; a missing namespace is a
/// lookup error, as a 403 or a timeout would be.
#[derive(Default)]
struct FakeCluster {
    namespaces: HashMap<String, Namespace>,
    owners: HashMap<(String, String), OwnerRef>,
    /// Every Event recorded: (namespace, regarding, reason).
    events: Option<tokio::sync::mpsc::UnboundedSender<(String, OwnerRef, String)>>,
}

impl Cluster for FakeCluster {
    fn namespace<'a>(&'a self, name: &'a str) -> Lookup<'a, Namespace> {
        let found = self.namespaces.get(name).cloned();
        Box::pin(async move { found.ok_or_else(|| format!("namespaces {name:?} is forbidden")) })
    }

    fn controller_of<'a>(
        &'a self,
        _namespace: &'a str,
        kind: &'a str,
        name: &'a str,
    ) -> Lookup<'a, Option<OwnerRef>> {
        let found = self
            .owners
            .get(&(kind.to_string(), name.to_string()))
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn skipped_event<'a>(
        &'a self,
        namespace: &'a str,
        regarding: &'a OwnerRef,
        reason: &'a str,
    ) -> Lookup<'a, ()> {
        if let Some(events) = &self.events {
            let _ = events.send((namespace.into(), regarding.clone(), reason.into()));
        }
        Box::pin(async { Ok(()) })
    }
}

fn cluster() -> FakeCluster {
    let mut c = FakeCluster::default();
    c.namespaces.insert(
        "demo".into(),
        Namespace {
            name: "demo".into(),
            labels: BTreeMap::new(),
            annotations: [(meta::INJECT.to_string(), "enabled".to_string())].into(),
        },
    );
    c.namespaces.insert(
        "plain".into(),
        Namespace {
            name: "plain".into(),
            ..Namespace::default()
        },
    );
    c.owners.insert(
        ("ReplicaSet".into(), "web-5d9c".into()),
        OwnerRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
        },
    );
    c.owners.insert(
        ("Job".into(), "report-2912".into()),
        OwnerRef {
            api_version: "batch/v1".into(),
            kind: "CronJob".into(),
            name: "report".into(),
        },
    );
    c
}

fn injector() -> Injector {
    Injector::new(
        Reloading::fixed(InjectConfig {
            values: Values::default(),
            trust_anchors: ANCHORS.into(),
        }),
        Arc::new(cluster()),
        Arc::new(Injections::default()),
    )
}

fn pod(owner: Option<(&str, &str, &str)>, annotations: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "generateName": "web-5d9c-", "annotations": annotations },
        "spec": { "containers": [{ "name": "app", "image": "web:1" }] },
    });
    if let Some((api_version, kind, name)) = owner {
        p["metadata"]["ownerReferences"] = json!([{
            "apiVersion": api_version, "kind": kind, "name": name, "uid": "u", "controller": true,
        }]);
    }
    p
}

fn review(namespace: &str, operation: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": namespace,
            "operation": operation,
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
            "object": object,
            "dryRun": false,
        }
    }))
    .expect("json")
}

/// The response's patch applied to `pod` (by json-patch, kube's implementation).
fn patched(pod: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("patch"))
        .expect("base64");
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("RFC 6902");
    let mut out = pod.clone();
    json_patch::patch(&mut out, &ops).expect("applies");
    out
}

fn response(answer: &Answer) -> Value {
    let v: Value = serde_json::from_slice(&answer.to_json()).expect("json");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], UID);
    assert_eq!(
        v["response"]["allowed"], true,
        "the injector never refuses a pod"
    );
    v["response"].clone()
}

#[tokio::test]
async fn a_deployments_pod_is_injected_and_labelled_with_its_deployment() {
    let inj = injector();
    let p = pod(Some(("apps/v1", "ReplicaSet", "web-5d9c")), json!({}));
    let answer = inj
        .review(&review("demo", "CREATE", p.clone()))
        .await
        .expect("review");
    assert_eq!(answer.result, InjectOutcome::Injected);
    let out = patched(&p, &response(&answer));
    assert_eq!(out["metadata"]["labels"]["mesh.rs/proxy-deployment"], "web");
    assert_eq!(out["metadata"]["labels"][meta::WORKLOAD_NS], "demo");
    assert_eq!(
        out["metadata"]["annotations"][meta::CREATED_BY],
        created_by().as_str()
    );
    let inits: Vec<_> = out["spec"]["initContainers"]
        .as_array()
        .expect("init")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(inits, ["mesh-init", "mesh-proxy"]);
    assert_eq!(inj.counts().total(InjectOutcome::Injected), 1);
}

#[tokio::test]
async fn a_cronjobs_pod_is_labelled_with_its_cronjob_and_a_lone_replicaset_with_itself() {
    let inj = injector();
    let p = pod(Some(("batch/v1", "Job", "report-2912")), json!({}));
    let answer = inj
        .review(&review("demo", "CREATE", p.clone()))
        .await
        .expect("review");
    let out = patched(&p, &response(&answer));
    assert_eq!(out["metadata"]["labels"]["mesh.rs/proxy-cronjob"], "report");
    let p = pod(Some(("apps/v1", "ReplicaSet", "orphan-1")), json!({}));
    let answer = inj
        .review(&review("demo", "CREATE", p.clone()))
        .await
        .expect("review");
    let out = patched(&p, &response(&answer));
    assert_eq!(
        out["metadata"]["labels"]["mesh.rs/proxy-replicaset"],
        "orphan-1"
    );
    let p = pod(Some(("apps/v1", "StatefulSet", "db")), json!({}));
    let answer = inj
        .review(&review("demo", "CREATE", p.clone()))
        .await
        .expect("review");
    let out = patched(&p, &response(&answer));
    assert_eq!(out["metadata"]["labels"]["mesh.rs/proxy-statefulset"], "db");
}

#[tokio::test]
async fn skips_are_recorded_and_unasked_pods_left_alone() {
    let inj = injector();
    let p = pod(None, json!({ "mesh.rs/inject": "disabled" }));
    let answer = inj
        .review(&review("demo", "CREATE", p.clone()))
        .await
        .expect("review");
    assert_eq!(answer.result, InjectOutcome::Skipped);
    let out = patched(&p, &response(&answer));
    assert!(out["metadata"]["annotations"][meta::INJECT_SKIPPED].is_string());

    let answer = inj
        .review(&review("plain", "CREATE", pod(None, json!({}))))
        .await
        .expect("review");
    assert_eq!(answer.result, InjectOutcome::Ignored);
    assert!(response(&answer).get("patch").is_none());

    let answer = inj
        .review(&review("demo", "UPDATE", pod(None, json!({}))))
        .await
        .expect("review");
    assert_eq!(
        answer.result,
        InjectOutcome::Ignored,
        "only CREATE is injected"
    );
    assert_eq!(inj.counts().total(InjectOutcome::Ignored), 2);
}

#[tokio::test]
async fn a_skip_is_an_event_on_the_owner_unless_dry_run() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut c = cluster();
    c.events = Some(tx);
    let inj = Injector::new(
        Reloading::fixed(InjectConfig {
            values: Values::default(),
            trust_anchors: ANCHORS.into(),
        }),
        Arc::new(c),
        Arc::new(Injections::default()),
    );
    let mut p = pod(Some(("apps/v1", "ReplicaSet", "web-5d9c")), json!({}));
    p["spec"]["hostNetwork"] = json!(true);
    let mut dry: Value =
        serde_json::from_slice(&review("demo", "CREATE", p.clone())).expect("json");
    dry["request"]["dryRun"] = json!(true);
    let answer = inj
        .review(&serde_json::to_vec(&dry).expect("json"))
        .await
        .expect("review");
    assert_eq!(answer.result, InjectOutcome::Skipped);
    let answer = inj
        .review(&review("demo", "CREATE", p))
        .await
        .expect("review");
    assert_eq!(answer.result, InjectOutcome::Skipped);
    let (ns, regarding, reason) =
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10s")
            .expect("an event");
    assert_eq!(ns, "demo");
    assert_eq!(
        (regarding.kind.as_str(), regarding.name.as_str()),
        ("Deployment", "web")
    );
    assert!(reason.contains("hostNetwork"), "{reason}");
    assert!(rx.try_recv().is_err(), "one event: none for the dry run");
}

#[tokio::test]
async fn a_namespace_that_cannot_be_read_leaves_only_the_pods_own_choice() {
    let inj = injector();
    let answer = inj
        .review(&review("secret", "CREATE", pod(None, json!({}))))
        .await
        .expect("review");
    let r = response(&answer);
    assert!(r.get("patch").is_none());
    let warning = r["warnings"][0].as_str().expect("a warning");
    assert!(
        warning.contains("secret") && warning.contains("forbidden"),
        "{warning}"
    );
    assert_eq!(answer.result, InjectOutcome::Error);
    // A pod that asks itself is still injected.
    let p = pod(None, json!({ "mesh.rs/inject": "enabled" }));
    let answer = inj
        .review(&review("secret", "CREATE", p.clone()))
        .await
        .expect("review");
    assert_eq!(answer.result, InjectOutcome::Injected);
    let out = patched(&p, &response(&answer));
    assert_eq!(out["metadata"]["labels"][meta::WORKLOAD_NS], "secret");
}

#[tokio::test]
async fn malformed_reviews_are_errors_never_panics() {
    let inj = injector();
    for (body, needle) in [
        (b"{".to_vec(), "invalid AdmissionReview"),
        (b"[]".to_vec(), "invalid AdmissionReview"),
        (br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec(), "expected apiVersion"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), "request: required"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#.to_vec(), "request.uid"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#.to_vec(), "request.uid"),
        (vec![0xff, 0xfe], "invalid AdmissionReview"),
    ] {
        let e = inj.review(&body).await.expect_err("not a review");
        assert!(e.contains(needle), "{needle}: {e}");
    }
    // Parsed, but nothing to inject: admitted with a warning saying why.
    let mut body: Value =
        serde_json::from_slice(&review("demo", "CREATE", json!("pod"))).expect("json");
    let answer = inj
        .review(&serde_json::to_vec(&body).expect("json"))
        .await
        .expect("review");
    assert!(response(&answer)["warnings"][0]
        .as_str()
        .is_some_and(|w| w.contains("request.object")));
    body["request"]["kind"] = json!({ "group": "apps", "version": "v1", "kind": "Deployment" });
    let answer = inj
        .review(&serde_json::to_vec(&body).expect("json"))
        .await
        .expect("review");
    assert!(response(&answer)["warnings"][0]
        .as_str()
        .is_some_and(|w| w.contains("only Pods")));
    // Odd pods: containers not a list, metadata missing.
    for object in [
        json!({ "metadata": { "annotations": { "mesh.rs/inject": "enabled" } }, "spec": { "containers": 3 } }),
        json!({ "spec": {} }),
        json!({ "metadata": { "annotations": [1] }, "spec": null }),
    ] {
        let answer = inj
            .review(&review("demo", "CREATE", object.clone()))
            .await
            .expect("review");
        let r = response(&answer);
        if r.get("patch").is_some() {
            patched(&object, &r);
        }
    }
    assert_eq!(inj.counts().total(InjectOutcome::Error), 9);
}

/// A self-signed certificate for 127.0.0.1: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

async fn post(
    addr: SocketAddr,
    trusted: &str,
    h2: bool,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Bytes) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trusted.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let io = TokioIo::new(tls);
    let req = HttpRequest::post(format!("https://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let rsp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2");
        tokio::spawn(conn);
        send.send_request(req).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1");
        tokio::spawn(conn);
        send.send_request(req).await
    }
    .expect("response");
    let status = rsp.status();
    (
        status,
        rsp.into_body().collect().await.expect("body").to_bytes(),
    )
}

#[tokio::test]
async fn over_https_beside_the_profile_validator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_pem, key_pem) = self_signed();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &cert_pem).expect("write");
    std::fs::write(&key, &key_pem).expect("write");
    let provider = tls::provider();
    let resolver = tls::ReloadingCert::new(cert, key, Arc::clone(&provider)).expect("cert");
    let config = tls::server_config(provider, Arc::new(resolver)).expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let inj = Arc::new(injector());
    let reviews = Arc::new(Reviews::default());
    let service = Webhook::new("cluster.local", reviews.clone()).with_injector(inj.clone());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(webhook::serve(
        listener,
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        service,
        shutdown.clone(),
    ));

    let p = pod(Some(("apps/v1", "ReplicaSet", "web-5d9c")), json!({}));
    for h2 in [false, true] {
        let (status, body) = post(
            addr,
            &cert_pem,
            h2,
            webhook::INJECT_PATH,
            review("demo", "CREATE", p.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        let answer: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(answer["response"]["uid"], UID);
        let out = patched(&p, &answer["response"]);
        assert_eq!(out["metadata"]["labels"]["mesh.rs/proxy-deployment"], "web");
    }
    let (status, body) = post(
        addr,
        &cert_pem,
        false,
        webhook::INJECT_PATH,
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body).contains("invalid AdmissionReview"),
        "{body:?}"
    );
    let (status, _) = post(
        addr,
        &cert_pem,
        true,
        webhook::INJECT_PATH,
        vec![b' '; webhook::MAX_BODY + 1],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // The validator still answers on its path.
    let (status, _) = post(addr, &cert_pem, false, webhook::PATH, b"{".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reviews.total(webhook::Outcome::Error),
        1,
        "counted as the validator's"
    );
    assert_eq!(inj.counts().total(InjectOutcome::Injected), 2);
    assert_eq!(inj.counts().total(InjectOutcome::Error), 2);
    let mut text = String::new();
    inj.counts().render(&mut text);
    assert!(
        text.contains("webhook_injections_total{result=\"injected\"} 2\n"),
        "{text}"
    );
    shutdown.cancel();
    server.await.expect("server stops");
}

#[tokio::test]
async fn without_an_injector_inject_is_not_found() {
    let webhook = Webhook::new("cluster.local", Arc::new(Reviews::default()));
    let rsp = webhook
        .handle(
            HttpRequest::post(webhook::INJECT_PATH)
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await;
    assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
}

/// `KubeCluster` through the real kube-rs client, against a loopback HTTP server that
/// answers as the API server does: the paths, the decoding and the Event it posts.
#[tokio::test]
async fn kube_cluster_asks_the_api_server() {
    use hyper::body::Incoming;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (posted_tx, mut posted) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let posted_tx = posted_tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: HttpRequest<Incoming>| {
                    let posted_tx = posted_tx.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let method = req.method().clone();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let (status, answer) = match (method.as_str(), path.as_str()) {
                            ("GET", "/api/v1/namespaces/demo") => (
                                200,
                                json!({
                                    "apiVersion": "v1", "kind": "Namespace",
                                    "metadata": { "name": "demo", "labels": { "team": "a" },
                                                  "annotations": { "mesh.rs/inject": "enabled" } },
                                }),
                            ),
                            ("GET", "/apis/apps/v1/namespaces/demo/replicasets/web-5d9c") => (
                                200,
                                json!({
                                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                                    "metadata": { "name": "web-5d9c", "namespace": "demo", "ownerReferences": [
                                        { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u1", "controller": true },
                                    ] },
                                    "spec": { "selector": {} },
                                }),
                            ),
                            ("POST", "/apis/events.k8s.io/v1/namespaces/demo/events") => {
                                let event: Value =
                                    serde_json::from_slice(&body).unwrap_or(Value::Null);
                                let _ = posted_tx.send((path.clone(), event.clone()));
                                (201, event)
                            }
                            _ => (
                                404,
                                json!({
                                    "apiVersion": "v1", "kind": "Status", "status": "Failure",
                                    "message": format!("{path} not found"), "reason": "NotFound", "code": 404,
                                }),
                            ),
                        };
                        let mut rsp =
                            http::Response::new(Full::new(Bytes::from(answer.to_string())));
                        *rsp.status_mut() = StatusCode::from_u16(status).expect("status");
                        rsp.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(rsp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let cluster = KubeCluster::new(client);

    let ns = cluster.namespace("demo").await.expect("namespace");
    assert_eq!(
        ns.annotations.get(meta::INJECT).map(String::as_str),
        Some("enabled")
    );
    assert_eq!(ns.labels.get("team").map(String::as_str), Some("a"));
    let owner = cluster
        .controller_of("demo", "ReplicaSet", "web-5d9c")
        .await
        .expect("lookup");
    assert_eq!(
        owner,
        Some(OwnerRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into()
        })
    );
    let e = cluster.namespace("gone").await.expect_err("404");
    assert!(e.contains("not found"), "{e}");
    let e = cluster
        .controller_of("demo", "Job", "nope")
        .await
        .expect_err("404");
    assert!(e.contains("not found"), "{e}");

    let web = OwnerRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
    };
    cluster
        .skipped_event(
            "demo",
            &web,
            "the pod uses the host's network (hostNetwork: true)",
        )
        .await
        .expect("event");
    let (_, event) = posted.recv().await.expect("an event posted");
    assert_eq!(event["reason"], SKIPPED_EVENT_REASON);
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["kind"], "Deployment");
    assert_eq!(event["regarding"]["name"], "web");
    assert!(event["note"]
        .as_str()
        .is_some_and(|n| n.contains("hostNetwork")));
    server.abort();
}

/// Writes a file as Kubernetes updates a ConfigMap volume: a new file renamed over.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test]
async fn a_changed_configuration_is_reloaded_and_a_broken_one_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = InjectFiles {
        values: dir.path().join("values.yaml"),
        anchors: dir.path().join("ca-bundle.crt"),
        trust_domain: "cluster.local".into(),
        cluster_domain: "cluster.local".into(),
    };
    replace(&files.values, &Values::default().to_yaml());
    replace(&files.anchors, ANCHORS);
    let reloading = Reloading::from_files(files.clone()).expect("loads");
    let inj = Injector::new(
        reloading,
        Arc::new(cluster()),
        Arc::new(Injections::default()),
    );
    let p = pod(None, json!({}));
    let hash = |answer: &Answer| {
        let out = patched(&p, &response(answer));
        out["metadata"]["annotations"][meta::TRUST_ROOT_SHA256]
            .as_str()
            .expect("hash")
            .to_string()
    };
    let first = hash(
        &inj.review(&review("demo", "CREATE", p.clone()))
            .await
            .expect("review"),
    );
    assert_eq!(first, inject::trust_root_sha256(ANCHORS));

    // Rotated anchors (a second certificate in the bundle) and a new log level.
    let rotated = format!("{ANCHORS}{ANCHORS}");
    replace(&files.anchors, &rotated);
    let mut values = Values::default();
    values.proxy.log_level = "debug".into();
    replace(&files.values, &values.to_yaml());
    let answer = inj
        .review(&review("demo", "CREATE", p.clone()))
        .await
        .expect("review");
    assert_eq!(hash(&answer), inject::trust_root_sha256(&rotated));
    let out = patched(&p, &response(&answer));
    let env = out["spec"]["initContainers"][1]["env"]
        .as_array()
        .expect("env")
        .clone();
    assert!(env
        .iter()
        .any(|e| e["name"] == "MESH_PROXY_LOG" && e["value"] == "debug"));

    // A broken change keeps the last good configuration.
    replace(&files.values, "proxy:\n  logLevl: x\n");
    let answer = inj
        .review(&review("demo", "CREATE", p.clone()))
        .await
        .expect("review");
    assert_eq!(hash(&answer), inject::trust_root_sha256(&rotated));
    assert!(
        matches!(files.load(), Err(LoadError::Values(m)) if m.contains("logLevl")),
        "the broken values are named"
    );
}

/// The token the injector mounts is minted for the audience the identity service
/// asks TokenReview about; the two constants live in two crates, so this keeps them one.
#[test]
fn the_projected_token_is_for_the_identity_services_audience() {
    assert_eq!(
        mesh_core::inject::pod::TOKEN_AUDIENCE,
        crate::identity::token::AUDIENCE
    );
}
