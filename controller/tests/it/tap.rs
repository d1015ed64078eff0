//! The tap API's refusals: without the identity service tap is off and says so; in
//! cluster mode the caller's bearer token is reviewed (TokenReview) and its user
//! authorized (SubjectAccessReview, verb `watch` on `tap.mesh.rs/tap` in the target's
//! namespace) against the fake Kubernetes API server, so RBAC decides who may tap.
//! What tap shows is tested end to end against the demo (`cli/tests/it/demo.rs`).

use mesh_api::tap::{tap_api_client::TapApiClient, ResourceSelection, TapByResourceRequest};
use mesh_controller::{
    index::Index,
    tap::{KubeAuthorizer, TapService},
    Config,
};
use mesh_kube_fake::FakeKube;
use std::{net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{transport::Channel, Code, Status};

fn deploy(namespace: &str, name: &str) -> TapByResourceRequest {
    TapByResourceRequest {
        target: Some(ResourceSelection {
            namespace: namespace.into(),
            kind: "deploy".into(),
            name: name.into(),
            label_selector: String::new(),
        }),
        ..Default::default()
    }
}

async fn client(addr: SocketAddr) -> TapApiClient<Channel> {
    TapApiClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// The status of a call with `token` (`None`: without one).
async fn call(addr: SocketAddr, token: Option<&str>, req: TapByResourceRequest) -> Status {
    let mut req = tonic::Request::new(req);
    if let Some(token) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match client(addr).await.tap_by_resource(req).await {
        Ok(_) => panic!("the call was answered with a stream"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn without_identity_tap_is_off_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.yaml");
    std::fs::write(&file, "services: []\n").unwrap();
    let running = Config::local(file).build().await.unwrap();
    let status = call(running.tap_addr, None, deploy("demo", "web")).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("without the identity service"),
        "{status:?}"
    );
    // Requests that cannot be read are refused first, with the reason.
    let mut bad = deploy("demo", "web");
    bad.target.as_mut().unwrap().kind = "gizmo".into();
    let status = call(running.tap_addr, None, bad).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    running.shutdown();
}

#[tokio::test]
async fn callers_are_authorized_by_subject_access_review() {
    let kube = FakeKube::start().await.unwrap();
    kube.add_token("alice-token", "alice", &["developers"]);
    kube.add_token("bob-token", "bob", &[]);
    kube.allow("alice", "watch", "tap.mesh.rs", "tap", Some("demo"));
    // Allowed something else: no tap.
    kube.allow("bob", "watch", "", "pods", Some("demo"));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    // Tap itself is off here (no identity): a call that passes authorization is told
    // so, which tells it apart from one refused by it.
    let service = TapService::new(
        Index::new("cluster.local", "cluster.local"),
        Err("tap is off (test)".into()),
        Some(Arc::new(KubeAuthorizer::new(Ok(kube.client().unwrap())))),
        shutdown.clone(),
    );
    let server = tokio::spawn(mesh_controller::tap::serve(
        listener,
        service,
        shutdown.clone(),
    ));

    let status = call(addr, Some("bob-token"), deploy("demo", "web")).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("bob may not tap namespace demo")
            && status
                .message()
                .contains("no rule allows \"bob\" to watch tap.tap.mesh.rs"),
        "{status:?}"
    );

    let status = call(addr, Some("alice-token"), deploy("other", "web")).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("alice may not tap namespace other"),
        "{status:?}"
    );

    let status = call(addr, Some("alice-token"), deploy("demo", "web")).await;
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "authorized: {status:?}"
    );

    let status = call(addr, Some("mallory-token"), deploy("demo", "web")).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("invalid bearer token"),
        "{status:?}"
    );

    let status = call(addr, None, deploy("demo", "web")).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("bearer token"), "{status:?}");

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
