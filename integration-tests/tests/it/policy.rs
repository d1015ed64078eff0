//! Authorization policy through the controller, end to end: the `kubernetes` backend
//! (the real kube-rs client watching the five `policy.mesh.rs` kinds and pods on the
//! fake API server) compiles them into the policy a `mesh.policy.InboundPolicies/Watch`
//! stream serves; a change arrives on the open stream; a delete restores the default.
//! Also the protocol's refusals (`INVALID_ARGUMENT`, `NOT_FOUND`), and a policy kind
//! whose CRD is not served (404), tolerated and picked up when it is.
//!
//! Needs `mesh-controller` built (`cargo build --workspace --bins`).

use mesh_api::policy::{inbound_policies_client::InboundPoliciesClient, InboundPolicy, PortSpec};
use mesh_integration_tests::mesh::Controller;
use mesh_kube_fake::{pod, FakeKube, Kind};
use serde_json::json;
use std::time::Duration;

const WORKLOAD: &str = r#"{"ns":"shop","pod":"web-1"}"#;

async fn watch(
    addr: std::net::SocketAddr,
    workload: &str,
    port: u32,
) -> Result<tonic::Streaming<InboundPolicy>, tonic::Status> {
    let mut client = InboundPoliciesClient::connect(format!("http://{addr}"))
        .await
        .expect("the controller serves");
    client
        .watch(PortSpec {
            workload: workload.into(),
            port,
        })
        .await
        .map(|r| r.into_inner())
}

/// The next policy on the stream, within 20 s.
async fn next(stream: &mut tonic::Streaming<InboundPolicy>) -> InboundPolicy {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a policy within 20s")
        .expect("the stream is healthy")
        .expect("the stream stays open")
}

fn server_of(p: &InboundPolicy) -> (String, String) {
    let m = p.server.as_ref().expect("server meta");
    (m.kind.clone(), m.name.clone())
}

fn authz_names(p: &InboundPolicy) -> Vec<String> {
    p.authorizations
        .iter()
        .map(|a| a.meta.as_ref().expect("meta").name.clone())
        .collect()
}

fn policy_object(kind: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "policy.mesh.rs/v1alpha1",
        "kind": kind,
        "metadata": {"namespace": "shop", "name": name},
        "spec": spec,
    })
}

fn web_pod() -> serde_json::Value {
    let mut p = pod(
        "shop",
        "web-1",
        "198.18.0.7",
        "web",
        Some(("Deployment", "web")),
        &[("app", "web")],
    );
    p["spec"]["containers"] = json!([{
        "name": "app",
        "image": "web",
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"port": "http", "path": "/ready"}},
    }]);
    p
}

/// `web-1` in the API server, and a controller (its binary) synced with it.
async fn controller_with_web_pod(kube: &FakeKube) -> Controller {
    kube.apply(web_pod()).unwrap();
    let kubeconfig = kube.kubeconfig_path().to_path_buf();
    tokio::task::spawn_blocking(move || Controller::kubernetes(&kubeconfig, None))
        .await
        .unwrap()
        .expect("the controller syncs (policy CRDs missing or not)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_policies_compile_stream_change_and_delete() {
    let kube = FakeKube::start().await.unwrap();
    let ctl = controller_with_web_pod(&kube).await;

    // Refusals: a malformed workload, a bad port, an unknown pod.
    let bad = watch(ctl.destination, "web-1", 8080).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("invalid workload"), "{bad:?}");
    let bad = watch(ctl.destination, WORKLOAD, 70000).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let gone = watch(ctl.destination, r#"{"ns":"shop","pod":"nope"}"#, 8080)
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");

    // No Server: the cluster default, with the pod's probe route on its port.
    let mut stream = watch(ctl.destination, WORKLOAD, 8080).await.unwrap();
    let first = next(&mut stream).await;
    assert_eq!(
        server_of(&first),
        ("default".into(), "all-unauthenticated".into())
    );
    assert!(first
        .http_routes
        .iter()
        .any(|r| r.meta.as_ref().unwrap().name == "probe"));

    // Server (by the named port) + MeshTLSAuthentication + AuthorizationPolicy.
    kube.apply_all([
        policy_object(
            "Server",
            "web-http",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "port": "http"}),
        ),
        policy_object(
            "MeshTLSAuthentication",
            "frontend",
            json!({"identities": ["frontend.shop.serviceaccount.identity.mesh.cluster.local"]}),
        ),
        policy_object(
            "AuthorizationPolicy",
            "web-from-frontend",
            json!({
                "targetRef": {"group": "policy.mesh.rs", "kind": "Server", "name": "web-http"},
                "requiredAuthenticationRefs": [
                    {"group": "policy.mesh.rs", "kind": "MeshTLSAuthentication", "name": "frontend"}
                ],
            }),
        ),
    ])
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let compiled = loop {
        let p = next(&mut stream).await;
        if authz_names(&p) == ["web-from-frontend"] {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never compiled: {p:?}"
        );
    };
    assert_eq!(server_of(&compiled), ("server".into(), "web-http".into()));
    let tls = format!("{:?}", compiled.authorizations[0].authentication);
    assert!(
        tls.contains("frontend.shop.serviceaccount.identity.mesh.cluster.local"),
        "{tls}"
    );

    // A change: the authentication names another identity.
    kube.apply(policy_object(
        "MeshTLSAuthentication",
        "frontend",
        json!({"identities": ["admin.shop.serviceaccount.identity.mesh.cluster.local"]}),
    ))
    .unwrap();
    let changed = next(&mut stream).await;
    let tls = format!("{:?}", changed.authorizations[0].authentication);
    assert!(tls.contains("admin.shop"), "{tls}");

    // An invalid update is refused; the last valid Server stays in force.
    kube.apply(policy_object(
        "Server",
        "web-http",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "port": 0}),
    ))
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ctl.metrics().unwrap().sum(
        "policy_resources_rejected_total",
        &[("resource", "servers")],
    ) < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the invalid Server was never read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = watch(ctl.destination, WORKLOAD, 8080).await.unwrap();
    assert_eq!(
        server_of(&next(&mut again).await),
        ("server".into(), "web-http".into())
    );

    // Delete the Server: the default is back on the open stream.
    kube.delete(Kind::Server, "shop", "web-http").unwrap();
    let restored = next(&mut stream).await;
    assert_eq!(
        server_of(&restored),
        ("default".into(), "all-unauthenticated".into())
    );
    let m = ctl.metrics().unwrap();
    assert!(m.sum("destination_streams", &[("kind", "policy")]) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_policy_crd_is_tolerated_and_picked_up_without_restart() {
    let kube = FakeKube::start().await.unwrap();
    kube.set_served(Kind::Server, false);
    let ctl = controller_with_web_pod(&kube).await;
    let mut stream = watch(ctl.destination, WORKLOAD, 8080).await.unwrap();
    assert_eq!(next(&mut stream).await.server.unwrap().kind, "default");
    let m = ctl.metrics().unwrap();
    assert_eq!(
        m.sum("policy_crd_installed", &[("resource", "servers")]),
        0.0
    );

    kube.set_served(Kind::Server, true);
    kube.apply(policy_object(
        "Server",
        "web-http",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "port": 8080}),
    ))
    .unwrap();
    // Picked up within the CRD retry (5 s), on the open stream.
    let p = next(&mut stream).await;
    assert_eq!(server_of(&p), ("server".into(), "web-http".into()));
    assert!(
        p.authorizations.is_empty(),
        "a Server with no policy denies"
    );
}
