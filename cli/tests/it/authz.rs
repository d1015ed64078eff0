//! Process-level tests of `mesh authz` and `mesh policy check`: the real `mesh` against
//! a real `mesh-controller` on the file backend, whose destinations file carries the
//! policies, so what is checked is the controller's compiled policy as its proxies
//! would get it, run through the proxy's own decision.

use super::cluster::Controller;
use std::process::{Command, Output};

/// Namespace `shop`: `web` (meshed, 127.0.0.2), `batch` (meshed, another identity,
/// 127.0.0.3) and `api`, whose port `http` (8080) only `web` may call, with a health
/// route open to anyone; `legacy`, under the `audit` default.
const FILE: &str = r#"
services:
  - name: web
    namespace: shop
    endpoints:
      - address: 127.0.0.2:8080
        labels: {pod: web-0, deployment: web, serviceaccount: web}
        identity: web.shop.serviceaccount.identity.mesh.cluster.local
  - name: batch
    namespace: shop
    endpoints:
      - address: 127.0.0.3:8080
        labels: {pod: batch-0, deployment: batch, serviceaccount: batch}
        identity: batch.shop.serviceaccount.identity.mesh.cluster.local
  - name: api
    namespace: shop
    endpoints:
      - address: 127.0.0.4:8080
        labels: {pod: api-0, deployment: api, serviceaccount: api}
        identity: api.shop.serviceaccount.identity.mesh.cluster.local
        namedPorts: {http: 8080}
  - name: legacy
    namespace: shop
    endpoints:
      - address: 127.0.0.5:9000
        labels: {pod: legacy-0, deployment: legacy, serviceaccount: legacy}
        identity: legacy.shop.serviceaccount.identity.mesh.cluster.local
        defaultInboundPolicy: audit
policies:
  - apiVersion: policy.mesh.rs/v1alpha1
    kind: Server
    metadata: {name: api-http, namespace: shop}
    spec: {podSelector: {matchLabels: {deployment: api}}, port: http, proxyProtocol: HTTP/1}
  - apiVersion: policy.mesh.rs/v1alpha1
    kind: HTTPRoute
    metadata: {name: api-v1, namespace: shop}
    spec:
      parentRefs: [{name: api-http}]
      rules: [{matches: [{path: {type: PathPrefix, value: /v1}}]}]
  - apiVersion: policy.mesh.rs/v1alpha1
    kind: HTTPRoute
    metadata: {name: api-health, namespace: shop}
    spec:
      parentRefs: [{name: api-http}]
      rules: [{matches: [{path: {type: Exact, value: /healthz}, method: GET}]}]
  - apiVersion: policy.mesh.rs/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: api-from-web, namespace: shop}
    spec:
      targetRef: {group: policy.mesh.rs, kind: HTTPRoute, name: api-v1}
      requiredAuthenticationRefs: [{group: policy.mesh.rs, kind: MeshTLSAuthentication, name: web}]
  - apiVersion: policy.mesh.rs/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: api-health, namespace: shop}
    spec:
      targetRef: {group: policy.mesh.rs, kind: HTTPRoute, name: api-health}
      requiredAuthenticationRefs: []
  - apiVersion: policy.mesh.rs/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: orphan, namespace: shop}
    spec:
      targetRef: {group: policy.mesh.rs, kind: Server, name: api-http}
      requiredAuthenticationRefs: [{group: policy.mesh.rs, kind: MeshTLSAuthentication, name: missing}]
  - apiVersion: policy.mesh.rs/v1alpha1
    kind: MeshTLSAuthentication
    metadata: {name: web, namespace: shop}
    spec:
      identityRefs: [{kind: ServiceAccount, name: web}]
"#;

fn mesh(controller: &Controller, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .args(["--api-addr", &controller.api.to_string()])
        .env("TMPDIR", dir.path())
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("mesh runs")
}

fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn check(c: &Controller, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["policy", "check", "-n", "shop"];
    all.extend(args);
    let out = mesh(c, &all);
    (out.status.code(), said(&out))
}

#[test]
fn authz_lists_servers_routes_and_what_each_allows() {
    let c = Controller::start_with(FILE);
    let out = mesh(&c, &["authz", "-n", "shop", "deploy/api"]);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("PORT") && lines[0].contains("ALLOWS"),
        "{text}"
    );
    let row = |needles: &[&str]| {
        assert!(
            lines.iter().any(|l| needles.iter().all(|n| l.contains(n))),
            "no row with {needles:?} in:\n{text}"
        )
    };
    row(&[
        "8080",
        "srv/api-http",
        "http1",
        "httproute/api-v1",
        "/v1/*",
        "authorizationpolicy/api-from-web",
        "mesh TLS: web.shop.serviceaccount.identity.mesh.cluster.local",
    ]);
    row(&[
        "httproute/api-health",
        "GET /healthz",
        "authorizationpolicy/api-health",
        "unauthenticated from 0.0.0.0/0, ::/0",
    ]);
    row(&["8080", "(fallback)", "deny"]);
    // The policy whose authentication is missing is left out, and said why.
    assert!(!text.contains("authorizationpolicy/orphan"), "{text}");
    assert!(text.contains("rejected in namespace shop:"), "{text}");
    assert!(
        text.contains("orphan") && text.contains("missing"),
        "{text}"
    );

    let json = mesh(&c, &["authz", "-n", "shop", "deploy/api", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(doc["pods"][0]["name"], "api-0");
    assert_eq!(doc["pods"][0]["ports"][0]["port"], 8080);
    assert_eq!(
        doc["pods"][0]["ports"][0]["policy"]["server"]["name"],
        "api-http"
    );
}

/// Each case: the flags, the exit status, how the output begins and what it says.
type Case<'a> = (&'a [&'a str], i32, &'a str, &'a str);

fn run_cases(c: &Controller, cases: &[Case<'_>]) {
    for (args, want, starts, says) in cases {
        let (code, text) = check(c, args);
        assert_eq!(code, Some(*want), "{args:?}: {text}");
        assert!(text.starts_with(starts), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
    }
}

#[test]
fn check_allows_denies_and_says_why() {
    let c = Controller::start_with(FILE);
    let web = "web.shop.serviceaccount.identity.mesh.cluster.local";
    let denied_batch = format!(
        "client identity `batch.shop.serviceaccount.identity.mesh.cluster.local` is not one of [{web}]"
    );
    run_cases(
        &c,
        &[
            // Allowed: web's identity on the route that wants it; the named port resolved.
            (
                &["--from", "deploy/web", "--to", "deploy/api:http", "--path", "/v1/orders"],
                0,
                "ALLOWED by authorizationpolicy/api-from-web (route httproute/api-v1, server srv/api-http)",
                "authorizationpolicy/api-from-web (route httproute/api-v1): matches",
            ),
            // Denied by identity, with the reason.
            (
                &["--from", "deploy/batch", "--to", "deploy/api:8080", "--path", "/v1/orders"],
                1,
                "DENIED: no authorization allows it (route httproute/api-v1",
                &denied_batch,
            ),
            // Denied: plaintext.
            (
                &["--from", "deploy/web", "--unmeshed", "--to", "deploy/api:8080", "--path", "/v1/x"],
                1,
                "DENIED: ",
                "not mesh TLS: the client has no mesh identity",
            ),
            // From outside the mesh, on the open route.
            (
                &["--from-ip", "203.0.113.9", "--to", "deploy/api:8080", "--path", "/healthz"],
                0,
                "ALLOWED by authorizationpolicy/api-health",
                "from 203.0.113.9, no mesh identity",
            ),
            // No route matches: each route says why.
            (
                &["--from", "deploy/web", "--to", "deploy/api:8080", "--path", "/admin"],
                1,
                "NOT FOUND: no route of server srv/api-http matches",
                "route httproute/api-v1: GET /admin matches none of: /v1/*",
            ),
            // Audit: allowed by the fallback alone, which the status says (1).
            (
                &["--from-ip", "203.0.113.9", "--to", "deploy/legacy:9000"],
                1,
                "AUDIT: would be denied",
                "server default/audit",
            ),
            // A connection, not a request: the server-wide authorizations alone (none).
            (
                &["--from", "deploy/web", "--to", "deploy/api:8080", "--tcp"],
                1,
                "DENIED",
                "connection to deploy/api:8080",
            ),
        ],
    );
}

#[test]
fn check_refuses_bad_flags_and_unknown_workloads() {
    let c = Controller::start_with(FILE);
    run_cases(
        &c,
        &[
            (
                &["--from", "deploy/web", "--to", "deploy/api"],
                64,
                "",
                "--to \"deploy/api\": expected TYPE/NAME:PORT",
            ),
            (
                &["--from", "svc/web", "--to", "deploy/api:80"],
                64,
                "",
                "--from \"svc/web\"",
            ),
            (
                &["--from", "deploy/nope", "--to", "deploy/api:8080"],
                2,
                "",
                "no pods of deploy/nope in namespace shop",
            ),
            (
                &["--from", "deploy/web", "--to", "deploy/api:grpc"],
                2,
                "",
                "has no port named \"grpc\" (its named ports: http)",
            ),
            (&["--to", "deploy/api:8080"], 64, "", "--from"),
            (
                &[
                    "--from",
                    "deploy/web",
                    "--to",
                    "deploy/api:8080",
                    "--header",
                    "nocolon",
                ],
                64,
                "",
                "--header \"nocolon\": expected NAME:VALUE",
            ),
        ],
    );
}
