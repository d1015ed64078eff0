//! Process-level tests of `mesh policy validate`: the real `mesh` binary, its output and
//! exit code, as a user or a CI job sees them. Every problem of every document is named
//! with its file, document, kind, name and field; exit 1 when any is invalid.

use super::profile::mesh;
use std::path::Path;

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/install/policy.yaml")
        .display()
        .to_string()
}

#[test]
fn the_examples_are_valid() {
    let out = mesh(&["policy", "validate", &examples()], "");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = said
        .lines()
        .map(|l| l.split_once(": ").map_or(l, |(_, rest)| rest))
        .collect();
    assert_eq!(
        lines,
        [
            "document 1 (Server voting-grpc): valid, port grpc, protocol gRPC, accessPolicy deny",
            "document 2 (Server web-http): valid, port 8080, protocol unknown, accessPolicy audit",
            "document 3 (AuthorizationPolicy voting-from-web): valid, Server voting-grpc, 2 authentications",
            "document 4 (AuthorizationPolicy web-health): valid, HTTPRoute web-health, no authentication (every client allowed)",
            "document 5 (AuthorizationPolicy demo-from-ops): valid, every Server of its namespace, 1 authentication",
            "document 6 (MeshTLSAuthentication web): valid, 1 identity match",
            "document 7 (NetworkAuthentication cluster): valid, 2 networks",
            "document 8 (HTTPRoute web-health): valid, 1 parent, 2 matches",
        ]
    );
}

#[test]
fn every_problem_is_named_with_its_document_and_field() {
    let yaml = "\
apiVersion: v1
kind: Service
metadata: {name: web}
---
apiVersion: policy.mesh.rs/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  targetRef: {kind: Server, name: web}
  requiredAuthenticationRefs:
  - {kind: MeshTLSAuthentication, name: web}
---
apiVersion: policy.mesh.rs/v1alpha1
kind: Server
metadata: {name: s}
spec:
  podSelector: {}
  port: 8080
  proxyProtocol: HTTP/3
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: l5d}
spec: {}
";
    let out = mesh(&["policy", "validate", "-"], yaml);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines[0],
        "<stdin>: document 1 (Service web): skipped, not a policy document"
    );
    assert_eq!(lines[1], "<stdin>: document 2 (AuthorizationPolicy p): spec.targetRef.group: missing: an empty group means the core group, which has no Server; write `group: policy.mesh.rs`");
    assert_eq!(lines[2], "<stdin>: document 2 (AuthorizationPolicy p): spec.requiredAuthenticationRefs[0].group: missing: an empty group means the core group, which has no MeshTLSAuthentication; write `group: policy.mesh.rs`");
    assert!(
        lines[3].starts_with(
            "<stdin>: document 3 (Server s): spec.proxyProtocol: unknown variant `HTTP/3`"
        ) && lines[3].contains("(line 19, column"),
        "the file's line: {}",
        lines[3]
    );
    assert_eq!(lines[4], "<stdin>: document 4 (Server l5d): apiVersion: expected \"policy.mesh.rs/v1alpha1\", found \"policy.linkerd.io/v1beta3\" (a Linkerd or Gateway API policy moves by changing its apiVersion)");
    assert_eq!(lines.len(), 5, "{said}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3 of 3 policy documents invalid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_document_or_no_file_fails() {
    let out = mesh(
        &["policy", "validate", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no policy document found"));
    let out = mesh(&["policy", "validate", "/nonexistent/policy.yaml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/policy.yaml"));
    let out = mesh(&["policy", "validate"], "");
    assert_eq!(out.status.code(), Some(64), "a usage error");
}
