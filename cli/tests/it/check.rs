//! `mesh check` against the fake Kubernetes API server (the real list protocol, the
//! real kube-rs client): a healthy cluster passes; invalid ServiceProfiles are reported
//! with their object, field path and reason, and fail the check; an unreachable API
//! server fails it with a clear message.

use mesh_kube_fake::{service_profile, FakeKube};
use serde_json::json;
use std::{path::Path, process::Command};

/// Runs `mesh check` with `args` against `kubeconfig`: exit code and stdout.
async fn check(kubeconfig: &Path, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh"));
    cmd.arg("check")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run mesh"))
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_profiles_are_reported_with_their_fields() {
    let kube = FakeKube::start().await.unwrap();
    kube.apply(service_profile(
        "default",
        "web.default.svc.cluster.local",
        json!({"routes": [{"name": "list", "condition": {"method": "GET", "pathRegex": "/api/list"}}]}),
    ))
    .unwrap();
    let (code, out) = check(kube.kubeconfig_path(), &[]).await;
    assert_eq!(code, 0, "{out}");
    for line in [
        "√ can query the Kubernetes API",
        "√ the ServiceProfile CRD is installed",
        "√ ServiceProfiles are valid",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }

    kube.apply(service_profile(
        "shop",
        "cart.shop.svc.cluster.local",
        json!({"routes": [
            {"name": "a", "condition": {"pathRegex": "/cart/("}},
            {"name": "b", "condition": {"method": "GET"},
             "responseClasses": [{"condition": {"status": {"min": 500, "max": 400}}}]}
        ]}),
    ))
    .unwrap();
    let (code, out) = check(kube.kubeconfig_path(), &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("× ServiceProfiles are valid"), "{out}");
    assert!(
        out.contains("shop/cart.shop.svc.cluster.local: spec.routes[0].condition.pathRegex: "),
        "{out}"
    );
    assert!(
        out.contains("shop/cart.shop.svc.cluster.local: spec.routes[1].responseClasses[0].condition.status: min 500 is greater than max 400"),
        "{out}"
    );
    // The valid profile is not reported.
    assert!(!out.contains("default/web"), "{out}");
    // `--pre` checks only what an install needs.
    let (code, out) = check(kube.kubeconfig_path(), &["--pre"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("ServiceProfile"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_fails_the_check() {
    let kube = FakeKube::start().await.unwrap();
    // The fake removes its kubeconfig when dropped: keep a copy naming the gone server.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::copy(kube.kubeconfig_path(), &kubeconfig).unwrap();
    drop(kube);
    let (code, out) = check(&kubeconfig, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("× can query the Kubernetes API"), "{out}");
    assert!(!out.contains("mesh-config"), "{out}");
    let (code, out) = check(Path::new("/nonexistent/kubeconfig"), &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("× can initialize the client"), "{out}");
    assert!(out.contains("/nonexistent/kubeconfig"), "{out}");
}
