//! `mesh inject` and `mesh uninject` as a user runs them (the real binary), and the
//! pods the injector makes of real workloads checked against the official Kubernetes
//! schemas (`kubernetes-validate --strict`, every supported version).
//!
//! The fixtures (`tests/fixtures/inject/`) are a Deployment, a StatefulSet, a
//! DaemonSet, a Job and a bare Pod. `--manual` applies `mesh_core::inject`'s patch,
//! the webhook's own, so each injected template is also compared with the patch
//! applied to the fixture's pod as the webhook would get it.

use super::profile::mesh;
use mesh_core::{
    inject::{self, Decision, Input, Namespace, Owner},
    install::{Values, VERSION},
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const ANCHORS: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUR0\n-----END CERTIFICATE-----\n";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inject")
        .join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The documents of a YAML stream, as JSON.
fn docs(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .map(|d| mesh_core::yaml::from_str::<Value>(d).expect("yaml"))
        .collect()
}

fn template_of(doc: &Value) -> Value {
    match doc["kind"].as_str() {
        Some("Pod") => doc.clone(),
        _ => doc["spec"]["template"].clone(),
    }
}

/// A Pod made of a workload's template, as the API server would create it.
fn pod_of(doc: &Value) -> Value {
    let t = template_of(doc);
    let mut metadata = t["metadata"].clone();
    metadata["name"] = json!(format!(
        "{}-0",
        doc["metadata"]["name"].as_str().expect("name")
    ));
    metadata["namespace"] = doc["metadata"]["namespace"].clone();
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": t["spec"] })
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .map(|c| c["name"].as_str().expect("name").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn injected_fixtures_are_valid_pods_with_exactly_the_expected_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let anchors = dir.path().join("ca.crt");
    std::fs::write(&anchors, ANCHORS).expect("write");
    let anchors_flag = format!("--identity-trust-anchors-file={}", anchors.display());
    let proxy_env = [
        "_pod_name",
        "_pod_ns",
        "_pod_sa",
        "MESH_PROXY_LOG",
        "MESH_PROXY_DESTINATION_ADDR",
        "MESH_PROXY_DESTINATION_CONTEXT",
        "MESH_PROXY_DESTINATION_SVC_NAME",
        "MESH_PROXY_IDENTITY_ADDR",
        "MESH_PROXY_IDENTITY_NAME",
        "MESH_PROXY_IDENTITY_SVC_NAME",
        "MESH_PROXY_IDENTITY_TOKEN_FILE",
        "MESH_PROXY_IDENTITY_TRUST_ANCHORS",
        "MESH_PROXY_TAP_SVC_NAME",
        "MESH_PROXY_POLICY_WORKLOAD",
        "MESH_PROXY_INBOUND_DEFAULT_POLICY",
    ];
    let mut all = String::new();
    for (file, owner, inits, containers, volumes, opaque) in [
        (
            "deployment.yaml",
            Some("deployment"),
            vec!["mesh-init", "mesh-proxy", "migrate"],
            vec!["web"],
            vec!["cache", "mesh-identity-token", "mesh-init-run"],
            false,
        ),
        (
            "statefulset.yaml",
            Some("statefulset"),
            vec!["mesh-init", "mesh-proxy"],
            vec!["postgres"],
            vec!["mesh-identity-token", "mesh-init-run"],
            true,
        ),
        (
            "daemonset.yaml",
            Some("daemonset"),
            vec!["mesh-init", "mesh-proxy"],
            vec!["agent"],
            vec!["mesh-identity-token", "mesh-init-run"],
            false,
        ),
        (
            "job.yaml",
            Some("job"),
            vec!["mesh-init", "mesh-proxy"],
            vec!["report"],
            vec!["mesh-identity-token", "mesh-init-run"],
            false,
        ),
        (
            "pod.yaml",
            None,
            vec!["mesh-init", "mesh-proxy"],
            vec!["shell"],
            vec!["mesh-identity-token", "mesh-init-run"],
            false,
        ),
    ] {
        let path = fixture(file);
        let out = mesh(
            &[
                "inject",
                "--manual",
                &anchors_flag,
                path.to_str().expect("utf8"),
            ],
            "",
        );
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        let kind = file.trim_end_matches(".yaml");
        assert!(
            text(&out.stderr).starts_with(&format!("{kind} \"")),
            "{}",
            text(&out.stderr)
        );
        let yaml = text(&out.stdout);
        let injected = docs(&yaml).remove(0);
        let pod = pod_of(&injected);

        assert_eq!(names(&pod["spec"]["initContainers"]), inits, "{file}");
        assert_eq!(names(&pod["spec"]["containers"]), containers, "{file}");
        assert_eq!(names(&pod["spec"]["volumes"]), volumes, "{file}");
        let proxy = pod["spec"]["initContainers"][inits
            .iter()
            .position(|n| *n == "mesh-proxy")
            .expect("proxy")]
        .clone();
        let mut want: Vec<&str> = proxy_env.to_vec();
        // The fixtures whose containers declare ports.
        if ["deployment.yaml", "statefulset.yaml"].contains(&file) {
            want.push("MESH_PROXY_INBOUND_PORTS");
        }
        if opaque {
            want.push("MESH_PROXY_OPAQUE_PORTS");
        }
        assert_eq!(names(&proxy["env"]), want, "{file}");
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["mesh.rs/control-plane-ns"], "mesh-system");
        assert_eq!(
            labels["mesh.rs/workload-ns"],
            injected["metadata"]["namespace"]
        );
        if let Some(owner) = owner {
            assert_eq!(
                labels[format!("mesh.rs/proxy-{owner}")],
                injected["metadata"]["name"]
            );
        }

        // The webhook's patch on the fixture's pod gives the same pod.
        let original = docs(&std::fs::read_to_string(&path).expect("read")).remove(0);
        let mut raw = pod_of(&original);
        raw["metadata"]["annotations"]["mesh.rs/inject"] = json!("enabled");
        let ns = Namespace {
            name: original["metadata"]["namespace"]
                .as_str()
                .expect("ns")
                .into(),
            ..Namespace::default()
        };
        let owner = (original["kind"] != "Pod").then(|| Owner {
            kind: original["kind"].as_str().expect("kind").into(),
            name: original["metadata"]["name"].as_str().expect("name").into(),
        });
        let created_by = format!("mesh/cli {VERSION}");
        let Decision::Inject(patch) = inject::decide(Input {
            pod: &raw,
            namespace: &ns,
            owner: owner.as_ref(),
            values: &Values::default(),
            trust_anchors: ANCHORS,
            created_by: &created_by,
        }) else {
            panic!("{file}: not injected");
        };
        patch.apply(&mut raw).expect("the patch applies");
        assert_eq!(
            raw, pod,
            "{file}: mesh inject --manual and the webhook's patch agree"
        );

        all.push_str("---\n");
        all.push_str(&yaml);
        all.push_str("---\n");
        all.push_str(&mesh_core::yaml::to_string(&pod).expect("yaml"));
    }
    mesh_kube_fake::schema::validate(&all).unwrap_or_else(|e| panic!("{e}\n{all}"));
}

#[test]
fn inject_and_uninject_round_trip_multi_document_input_through_stdin() {
    let original = std::fs::read_to_string(fixture("multi.yaml")).expect("read");
    let out = mesh(&["inject", "-"], &original);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "namespace \"shop\" injected\ndeployment \"cart\" injected\ncronjob \"nightly\" injected\n"
    );
    let injected = text(&out.stdout);
    let d = docs(&injected);
    assert_eq!(d.len(), 3);
    assert_eq!(d[0]["metadata"]["annotations"]["mesh.rs/inject"], "enabled");
    assert_eq!(
        d[1]["items"][1]["spec"]["template"]["metadata"]["annotations"]["mesh.rs/inject"],
        "enabled"
    );
    // Key order: the Deployment's template annotations as written, the new one last.
    let zeta = injected.find("zeta").expect("zeta");
    let alpha = injected.find("alpha").expect("alpha");
    let ours = injected.find("mesh.rs/inject: enabled\n").expect("ours");
    assert!(zeta < alpha, "{injected}");
    mesh_kube_fake::schema::validate(&injected).unwrap_or_else(|e| panic!("{e}\n{injected}"));

    let back = mesh(&["uninject", "-"], &injected);
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert_eq!(docs(&text(&back.stdout)), docs(&original));
    assert!(ours > 0);
    // Injecting again what is injected changes nothing more.
    let twice = mesh(&["inject", "-"], &injected);
    assert_eq!(text(&twice.stdout), injected);
}

#[test]
fn bad_input_and_flags_are_errors_naming_what() {
    let out = mesh(
        &["inject", "-"],
        "kind: Pod\nmetadata: {name: a}\n---\nmetadata: {name: b}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("<stdin>: document 2 (line 4): no kind"),
        "{}",
        text(&out.stderr)
    );
    let out = mesh(&["inject", "-"], "a: [\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("document 1"),
        "{}",
        text(&out.stderr)
    );
    let out = mesh(&["inject", "--proxy-cpu-limit=lots", "-"], "kind: Pod\n");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("--proxy-cpu-limit \"lots\""),
        "{}",
        text(&out.stderr)
    );
    let out = mesh(&["inject", "--manual", "-"], "kind: Pod\n");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("--identity-trust-anchors-file"),
        "{}",
        text(&out.stderr)
    );
}
