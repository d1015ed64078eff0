//! `mesh install` and `mesh uninstall`, run as the real binary: the rendered manifests
//! equal `manifests/install.yaml` (rendered with the public test keys of
//! `manifests/testdata/`), every one passes the official Kubernetes schemas of every
//! supported version (`kubernetes-validate --strict`), and what that validator does not
//! look at is checked here: a CRD's name, a container's image, and custom resources
//! against their CRD's own schema (`install/crd_validate.py`). The flags' errors say
//! what was wrong.
//!
//! The schema tests need PyPI's `kubernetes-validate` (which brings `jsonschema` and
//! `PyYAML`); `scripts/test.sh` installs it, and without it they are compiled as
//! ignored (`cfg(no_kubernetes_validate)`, `cli/build.rs`), so runners count them as
//! skipped.

use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the CLI is in the workspace")
        .to_path_buf()
}

fn mesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .env_remove("MESH_LOG")
        .output()
        .expect("mesh runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "mesh failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// The flags that render `manifests/install.yaml`: every certificate and key from
/// `manifests/testdata/`, so the output is the same on every run.
fn test_key_flags() -> Vec<String> {
    let data = repo().join("manifests/testdata");
    let file = |name: &str| data.join(name).display().to_string();
    vec![
        "--identity-trust-anchors-file".into(),
        file("anchor.crt"),
        "--identity-issuer-certificate-file".into(),
        file("issuer.crt"),
        "--identity-issuer-key-file".into(),
        file("issuer.key"),
        "--webhook-ca-file".into(),
        file("webhook-ca.crt"),
        "--webhook-certificate-file".into(),
        file("webhook.crt"),
        "--webhook-key-file".into(),
        file("webhook.key"),
    ]
}

fn install(extra: &[&str]) -> String {
    let mut args = vec!["install".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    stdout(&mesh(&args))
}

fn install_with_test_keys(extra: &[&str]) -> String {
    let flags = test_key_flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    install(&args)
}

/// Every YAML document of `text` (separated by `---` lines), as JSON values.
pub(super) fn documents(text: &str) -> Vec<Value> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .map(|d| mesh_core::yaml::from_str::<Value>(d).expect("each document is YAML"))
        .collect()
}

fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn the_rendered_default_is_manifests_install_yaml() {
    let rendered = install_with_test_keys(&[]);
    let path = repo().join("manifests/install.yaml");
    if std::env::var_os("MESH_UPDATE_MANIFESTS").is_some() {
        std::fs::write(&path, &rendered).expect("write manifests/install.yaml");
    }
    let committed = std::fs::read_to_string(&path).expect("manifests/install.yaml exists");
    if committed != rendered {
        let line = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()));
        panic!(
            "manifests/install.yaml differs from `mesh install` with the test keys, first at line {}:\n  committed: {:?}\n  rendered:  {:?}\nRegenerate it with `MESH_UPDATE_MANIFESTS=1 cargo test -p mesh-cli --test it install::the_rendered_default`.",
            line + 1,
            committed.lines().nth(line),
            rendered.lines().nth(line),
        );
    }
}

#[test]
fn install_prints_every_object_in_apply_order() {
    let docs = documents(&install_with_test_keys(&[]));
    assert_eq!(
        kinds(&docs),
        [
            "Namespace/mesh-system",
            "CustomResourceDefinition/serviceprofiles.mesh.rs",
            "CustomResourceDefinition/servers.policy.mesh.rs",
            "CustomResourceDefinition/authorizationpolicies.policy.mesh.rs",
            "CustomResourceDefinition/meshtlsauthentications.policy.mesh.rs",
            "CustomResourceDefinition/networkauthentications.policy.mesh.rs",
            "CustomResourceDefinition/httproutes.policy.mesh.rs",
            "ServiceAccount/mesh-controller",
            "ClusterRole/mesh-controller",
            "ClusterRoleBinding/mesh-controller",
            "ClusterRole/mesh-tap-user",
            "Role/mesh-cli",
            "ConfigMap/mesh-config",
            "ConfigMap/mesh-identity-trust-roots",
            "Secret/mesh-identity-issuer",
            "Secret/mesh-webhook-tls",
            "Service/mesh-destination",
            "Service/mesh-identity",
            "Service/mesh-webhook",
            "Deployment/mesh-controller",
            "MutatingWebhookConfiguration/mesh-proxy-injector",
            "ValidatingWebhookConfiguration/mesh-sp-validator",
            "ValidatingWebhookConfiguration/mesh-policy-validator",
        ]
    );
    let deployment = &docs[19];
    let pod = &deployment["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["mesh.rs/control-plane-component"], "controller",
        "the label by which the CLI finds the controller's pods"
    );
    let container = &pod["spec"]["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    assert!(
        container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == "admin" && p["containerPort"] == 9990),
        "the probes' port is 9990"
    );
    assert!(container["resources"]["requests"]["cpu"].is_string());
    // The webhooks fail open and stay out of the control plane's namespace.
    for webhook in &docs[20..] {
        let hook = &webhook["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Ignore");
        let excluded = &hook["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(excluded["operator"], "NotIn");
        assert_eq!(
            excluded["values"],
            serde_json::json!(["mesh-system", "kube-system"])
        );
        assert_eq!(hook["clientConfig"]["service"]["name"], "mesh-webhook");
        assert!(hook["clientConfig"]["caBundle"].is_string());
    }
}

/// The controller's RBAC: exactly the calls it makes, and nothing that grants
/// everything.
#[test]
fn the_controllers_role_is_least_privilege() {
    let docs = documents(&install_with_test_keys(&[]));
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "mesh-controller")
        .expect("the controller's ClusterRole");
    let mut grants = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in rule["apiGroups"].as_array().expect("groups") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    let (g, r, v) = (
                        group.as_str().unwrap_or("?"),
                        resource.as_str().unwrap_or("?"),
                        verb.as_str().unwrap_or("?"),
                    );
                    assert!(
                        g != "*" && r != "*" && v != "*",
                        "a wildcard grant: {g}/{r} {v}"
                    );
                    grants.push(format!("{v} {g}/{r}"));
                }
            }
        }
    }
    grants.sort();
    assert_eq!(
        grants,
        [
            "create authentication.k8s.io/tokenreviews",
            "create authorization.k8s.io/subjectaccessreviews",
            "create events.k8s.io/events",
            "get /namespaces",
            "get apps/replicasets",
            "get batch/jobs",
            "list /pods",
            "list /services",
            "list discovery.k8s.io/endpointslices",
            "list mesh.rs/serviceprofiles",
            "list policy.mesh.rs/authorizationpolicies",
            "list policy.mesh.rs/httproutes",
            "list policy.mesh.rs/meshtlsauthentications",
            "list policy.mesh.rs/networkauthentications",
            "list policy.mesh.rs/servers",
            "patch events.k8s.io/events",
            "watch /pods",
            "watch /services",
            "watch discovery.k8s.io/endpointslices",
            "watch mesh.rs/serviceprofiles",
            "watch policy.mesh.rs/authorizationpolicies",
            "watch policy.mesh.rs/httproutes",
            "watch policy.mesh.rs/meshtlsauthentications",
            "watch policy.mesh.rs/networkauthentications",
            "watch policy.mesh.rs/servers",
        ]
    );
    let tap = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "mesh-tap-user")
        .expect("the tap users' ClusterRole");
    assert_eq!(
        tap["rules"],
        serde_json::json!([{"apiGroups": ["tap.mesh.rs"], "resources": ["tap"], "verbs": ["watch"]}])
    );
}

#[test]
fn flags_change_what_they_say() {
    let docs = documents(&install(&[
        "--registry",
        "registry.example/mesh/",
        "--image-tag",
        "v9",
        "--ha",
        "--set",
        "proxy.logLevel=debug",
        "--set",
        "proxy.skipOutboundPorts=3306,8000-8010",
    ]));
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3, "--ha: three replicas");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.example/mesh/mesh-controller:v9"
    );
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert!(
        docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"),
        "--ha: a PodDisruptionBudget"
    );
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "mesh-config")
        .expect("mesh-config");
    let values = mesh_core::install::Values::from_yaml(
        config["data"]["values.yaml"].as_str().expect("values.yaml"),
    )
    .expect("the recorded values read back");
    assert_eq!(values.proxy.log_level, "debug");
    assert_eq!(values.proxy.skip_outbound_ports, "3306,8000-8010");
    assert_eq!(values.proxy_image(), "registry.example/mesh/mesh-proxy:v9");
    assert!(values.ha);

    // Fresh keys on every run.
    let anchors = |text: &str| {
        documents(text)
            .into_iter()
            .find(|d| d["metadata"]["name"] == "mesh-identity-trust-roots")
            .map(|d| d["data"]["ca-bundle.crt"].clone())
    };
    assert_ne!(anchors(&install(&[])), anchors(&install(&[])));

    let crds = documents(&install(&["--crds"]));
    assert_eq!(
        kinds(&crds),
        [
            "CustomResourceDefinition/serviceprofiles.mesh.rs",
            "CustomResourceDefinition/servers.policy.mesh.rs",
            "CustomResourceDefinition/authorizationpolicies.policy.mesh.rs",
            "CustomResourceDefinition/meshtlsauthentications.policy.mesh.rs",
            "CustomResourceDefinition/networkauthentications.policy.mesh.rs",
            "CustomResourceDefinition/httproutes.policy.mesh.rs",
        ]
    );
}

#[test]
fn bad_flags_say_what_is_wrong() {
    let data = repo().join("manifests/testdata");
    let file = |name: &str| data.join(name).display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--set".into(), "proxy.logLevl=debug".into()],
            "no such key",
        ),
        (vec!["--set".into(), "proxy.logLevel".into()], "KEY=VALUE"),
        (
            vec!["--set".into(), "controller.replicas=0".into()],
            "at least one replica",
        ),
        (
            vec!["--set".into(), "proxy.skipInboundPorts=22,99999".into()],
            "99999",
        ),
        (vec!["--registry".into(), "a b".into()], "--registry"),
        (
            vec!["--identity-trust-anchors-file".into(), file("anchor.crt")],
            "go together",
        ),
        // An issuer the anchors did not sign: the webhook CA stands in for the anchors.
        (
            vec![
                "--identity-trust-anchors-file".into(),
                file("webhook-ca.crt"),
                "--identity-issuer-certificate-file".into(),
                file("issuer.crt"),
                "--identity-issuer-key-file".into(),
                file("issuer.key"),
            ],
            "not signed by any of the 1 trust anchors",
        ),
        // A key that is not the issuer's.
        (
            vec![
                "--identity-trust-anchors-file".into(),
                file("anchor.crt"),
                "--identity-issuer-certificate-file".into(),
                file("issuer.crt"),
                "--identity-issuer-key-file".into(),
                file("webhook.key"),
            ],
            "does not match the issuer certificate",
        ),
        (
            vec![
                "--identity-trust-anchors-file".into(),
                file("missing.crt"),
                "--identity-issuer-certificate-file".into(),
                file("issuer.crt"),
                "--identity-issuer-key-file".into(),
                file("issuer.key"),
            ],
            "missing.crt",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["install"];
        args.extend(flags.iter().map(String::as_str));
        let out = mesh(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{flags:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{flags:?}: nothing printed on error");
        assert!(
            stderr.contains(expected),
            "{flags:?}: expected {expected:?} in {stderr}"
        );
    }
}

#[test]
fn uninstall_names_every_cluster_scoped_object_and_the_namespace() {
    let installed = documents(&install(&[]));
    let removed = documents(&stdout(&mesh(&["uninstall"])));
    let removed = kinds(&removed);
    assert_eq!(
        removed.first().map(String::as_str),
        Some("MutatingWebhookConfiguration/mesh-proxy-injector"),
        "the webhooks go first"
    );
    for doc in &installed {
        let namespaced = doc["metadata"]["namespace"].is_string();
        if !namespaced {
            let kind = kinds(std::slice::from_ref(doc)).remove(0);
            assert!(
                removed.contains(&kind),
                "{kind} is not removed by uninstall"
            );
        }
    }
}

#[cfg_attr(
    no_kubernetes_validate,
    ignore = "kubernetes-validate is not installed (scripts/test.sh installs it)"
)]
#[test]
fn every_rendered_manifest_passes_the_official_schemas() {
    for flags in [&[][..], &["--ha"][..], &["--crds"][..]] {
        let rendered = install(flags);
        if let Err(problems) = mesh_kube_fake::schema::validate(&rendered) {
            panic!("mesh install {flags:?} fails the Kubernetes schemas:\n{problems}");
        }
        check_what_the_validator_does_not(&documents(&rendered));
    }
    // The committed snapshot, and the CRD files as they are.
    for file in [
        "manifests/install.yaml",
        "manifests/crds/serviceprofiles.yaml",
        "manifests/crds/servers.yaml",
        "manifests/crds/authorizationpolicies.yaml",
        "manifests/crds/meshtlsauthentications.yaml",
        "manifests/crds/networkauthentications.yaml",
        "manifests/crds/httproutes.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).expect("read");
        if let Err(problems) = mesh_kube_fake::schema::validate(&text) {
            panic!("{file} fails the Kubernetes schemas:\n{problems}");
        }
    }
}

/// What `kubernetes-validate` does not check: a CRD named other than
/// `<plural>.<group>` (the API server refuses it), a container without an image (the
/// schema allows it for templates; the API server refuses such a pod).
fn check_what_the_validator_does_not(docs: &[Value]) {
    for doc in docs {
        if doc["kind"] == "CustomResourceDefinition" {
            let spec = &doc["spec"];
            let expected = format!(
                "{}.{}",
                spec["names"]["plural"].as_str().unwrap_or("?"),
                spec["group"].as_str().unwrap_or("?")
            );
            assert_eq!(doc["metadata"]["name"], expected.as_str(), "a CRD's name");
        }
        let pod = match doc["kind"].as_str() {
            Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job") => {
                &doc["spec"]["template"]["spec"]
            }
            Some("Pod") => &doc["spec"],
            _ => continue,
        };
        for list in ["containers", "initContainers"] {
            for c in pod[list].as_array().into_iter().flatten() {
                assert!(
                    c["image"].as_str().is_some_and(|i| !i.is_empty()),
                    "{} {}: container {} has no image",
                    doc["kind"],
                    doc["metadata"]["name"],
                    c["name"]
                );
            }
        }
    }
}

/// Custom resources against the CRD's own schema: the demo's ServiceProfiles, the
/// template `mesh profile --template` prints, and invalid ones that must fail (so the
/// check is known to look).
#[cfg_attr(
    no_kubernetes_validate,
    ignore = "kubernetes-validate is not installed (scripts/test.sh installs it)"
)]
#[test]
fn custom_resources_pass_their_crds_schema() {
    let tmp = tempfile::tempdir().expect("tmpdir");
    let crds = tmp.path().join("crds.yaml");
    std::fs::write(&crds, install(&["--crds"])).expect("write");

    let demo: Value = mesh_core::yaml::from_str(
        &std::fs::read_to_string(repo().join("cli/src/demo/profiles.yaml")).expect("read"),
    )
    .expect("the demo's profiles read");
    let mut resources = String::new();
    for profile in demo["profiles"].as_array().expect("a list of profiles") {
        resources.push_str("---\n");
        resources.push_str(&mesh_core::yaml::to_string(profile).expect("YAML"));
    }
    // And the demo's authorization policy.
    let policy: Value = mesh_core::yaml::from_str(
        &std::fs::read_to_string(repo().join("cli/src/demo/policy.yaml")).expect("read"),
    )
    .expect("the demo's policy reads");
    for resource in policy["policies"].as_array().expect("a list of policies") {
        resources.push_str("---\n");
        resources.push_str(&mesh_core::yaml::to_string(resource).expect("YAML"));
    }
    resources.push_str("---\n");
    resources.push_str(&stdout(&mesh(&[
        "profile",
        "--template",
        "web",
        "-n",
        "shop",
    ])));
    let valid = tmp.path().join("valid.yaml");
    std::fs::write(&valid, &resources).expect("write");
    let out = crd_validate(&crds, &valid);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("7 custom resource(s) valid"));

    let invalid = tmp.path().join("invalid.yaml");
    std::fs::write(
        &invalid,
        "apiVersion: mesh.rs/v1alpha1\nkind: ServiceProfile\nmetadata: {name: web.shop.svc.cluster.local}\n\
         spec:\n  routez: []\n  dstOverrides:\n  - {authority: a, weight: 0.5}\n",
    )
    .expect("write");
    let out = crd_validate(&crds, &invalid);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "an invalid profile passed: {said}");
    assert!(said.contains("routez"), "{said}");
    assert!(said.contains("spec.dstOverrides.0.weight"), "{said}");
}

/// The policy kinds against their CRDs' schemas: the examples (which `mesh policy
/// validate` accepts too) pass, and documents the schema must refuse are refused, each
/// naming its field.
#[cfg_attr(
    no_kubernetes_validate,
    ignore = "kubernetes-validate is not installed (scripts/test.sh installs it)"
)]
#[test]
fn policy_resources_pass_their_crds_schema() {
    let tmp = tempfile::tempdir().expect("tmpdir");
    let crds = tmp.path().join("crds.yaml");
    std::fs::write(&crds, install(&["--crds"])).expect("write");
    let valid = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/install/policy.yaml");
    let out = crd_validate(&crds, &valid);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("8 custom resource(s) valid"), "{said}");

    let head = "apiVersion: policy.mesh.rs/v1alpha1\nmetadata: {name: x}\n";
    for (doc, field) in [
        ("kind: Server\nspec: {podSelector: {}, port: 80, proxyProtocol: http}\n", "spec.proxyProtocol"),
        ("kind: Server\nspec: {podSelector: {}, port: 80, accessPolicy: allow}\n", "spec.accessPolicy"),
        ("kind: Server\nspec: {podSelector: {}}\n", "port"),
        ("kind: AuthorizationPolicy\nspec: {targetRef: {kind: Server, name: s}}\n", "requiredAuthenticationRefs"),
        ("kind: MeshTLSAuthentication\nspec: {identities: [a], identityRefs: [{kind: Namespace, name: n}]}\n", "spec"),
        ("kind: NetworkAuthentication\nspec: {networks: []}\n", "spec.networks"),
        ("kind: HTTPRoute\nspec: {parentRefs: [{name: s}], rules: [{matches: [{method: get}]}]}\n", "spec.rules.0.matches.0.method"),
        ("kind: HTTPRoute\nspec: {parentRefs: [{name: s}], rules: [{backendRefs: []}]}\n", "backendRefs"),
    ] {
        let file = tmp.path().join("invalid.yaml");
        std::fs::write(&file, format!("{head}{doc}")).expect("write");
        let out = crd_validate(&crds, &file);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "passed the schema: {doc}");
        assert!(said.contains(field), "{doc}: {said}");
    }
}

fn crd_validate(crds: &Path, resources: &Path) -> Output {
    Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/install/crd_validate.py"))
        .args([crds, resources])
        .output()
        .expect("python3 runs")
}
