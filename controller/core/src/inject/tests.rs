use super::*;
use crate::install::Values;
use serde_json::json;

const ANCHORS: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn ns(name: &str, annotations: &[(&str, &str)]) -> Namespace {
    Namespace {
        name: name.into(),
        labels: BTreeMap::new(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn pod(annotations: &[(&str, &str)]) -> Value {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "generateName": "web-5d9c-", "namespace": "demo", "labels": { "app": "web" } },
        "spec": { "containers": [{ "name": "app", "image": "web:1" }] },
    });
    if !annotations.is_empty() {
        p["metadata"]["annotations"] = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    p
}

fn run(pod: &Value, namespace: &Namespace, owner: Option<&Owner>, values: &Values) -> Decision {
    decide(Input {
        pod,
        namespace,
        owner,
        values,
        trust_anchors: ANCHORS,
        created_by: "mesh/test 0",
    })
}

fn decide_one(pod: &Value, namespace: &Namespace) -> Decision {
    run(pod, namespace, None, &Values::default())
}

/// Applies the patch with kube's RFC 6902 implementation, not ours.
fn applied(pod: &Value, patch: &Patch) -> Value {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.to_json()).expect("the patch is RFC 6902 JSON");
    let mut out = pod.clone();
    json_patch::patch(&mut out, &ops).expect("the patch applies");
    let mut ours = pod.clone();
    patch.apply(&mut ours).expect("our apply agrees");
    assert_eq!(ours, out, "Patch::apply and json-patch agree");
    out
}

fn injected(pod: &Value, namespace: &Namespace) -> Value {
    match decide_one(pod, namespace) {
        Decision::Inject(patch) => applied(pod, &patch),
        other => panic!("expected injection, got {other:?}"),
    }
}

fn skipped(d: Decision) -> (String, Patch) {
    match d {
        Decision::Skip { reason, patch } => (reason, patch),
        other => panic!("expected a skip, got {other:?}"),
    }
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    containers(pod, list)
}

fn env_of(c: &Value) -> BTreeMap<String, Value> {
    c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("name").to_string();
            (
                name,
                e.get("value")
                    .cloned()
                    .unwrap_or_else(|| e["valueFrom"].clone()),
            )
        })
        .collect()
}

fn find<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

#[test]
fn nothing_asked_is_left_alone() {
    assert_eq!(decide_one(&pod(&[]), &ns("demo", &[])), Decision::NotAsked);
    assert_eq!(
        decide_one(&pod(&[]), &ns("demo", &[(meta::INJECT, "disabled")])),
        Decision::NotAsked,
        "a namespace's disabled is nothing to record"
    );
}

#[test]
fn the_pod_or_else_its_namespace_decides() {
    let p = injected(&pod(&[(meta::INJECT, "enabled")]), &ns("demo", &[]));
    assert!(names(&p, "initContainers").contains(&"mesh-proxy".to_string()));
    let p = injected(&pod(&[]), &ns("demo", &[(meta::INJECT, "enabled")]));
    assert!(names(&p, "initContainers").contains(&"mesh-proxy".to_string()));
    // A namespace label counts too.
    let mut labelled = ns("demo", &[]);
    labelled
        .labels
        .insert(meta::INJECT.into(), "enabled".into());
    assert!(matches!(
        decide_one(&pod(&[]), &labelled),
        Decision::Inject(_)
    ));
    // The pod's disabled wins over the namespace's enabled, and is recorded.
    let p = pod(&[(meta::INJECT, "disabled")]);
    let (reason, patch) = skipped(decide_one(&p, &ns("demo", &[(meta::INJECT, "enabled")])));
    assert!(reason.contains("disabled"), "{reason}");
    let out = applied(&p, &patch);
    assert_eq!(
        out["metadata"]["annotations"][meta::INJECT_SKIPPED],
        reason.as_str()
    );
    assert_eq!(names(&out, "containers"), ["app"], "nothing else changes");
    // So does the pod's enabled over the namespace's disabled.
    let p = pod(&[(meta::INJECT, "enabled")]);
    assert!(matches!(
        decide_one(&p, &ns("demo", &[(meta::INJECT, "disabled")])),
        Decision::Inject(_)
    ));
}

#[test]
fn an_unknown_inject_value_is_a_recorded_skip() {
    let (reason, _) = skipped(decide_one(&pod(&[(meta::INJECT, "yes")]), &ns("demo", &[])));
    assert!(
        reason.contains("\"yes\"") && reason.contains("enabled"),
        "{reason}"
    );
}

#[test]
fn host_network_pods_are_skipped() {
    let mut p = pod(&[(meta::INJECT, "enabled")]);
    p["spec"]["hostNetwork"] = true.into();
    let (reason, patch) = skipped(decide_one(&p, &ns("demo", &[])));
    assert!(reason.contains("hostNetwork"), "{reason}");
    let out = applied(&p, &patch);
    assert_eq!(
        out["metadata"]["annotations"][meta::INJECT_SKIPPED],
        reason.as_str()
    );
}

#[test]
fn injected_pods_are_not_injected_again() {
    let once = injected(&pod(&[(meta::INJECT, "enabled")]), &ns("demo", &[]));
    let (reason, _) = skipped(decide_one(&once, &ns("demo", &[])));
    assert!(reason.contains("already injected"), "{reason}");
    // Classic sidecar, injected by hand: a regular mesh-proxy container.
    let mut p = pod(&[(meta::INJECT, "enabled")]);
    p["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({ "name": "mesh-proxy", "image": "x" }));
    let (reason, _) = skipped(decide_one(&p, &ns("demo", &[])));
    assert!(reason.contains("mesh-proxy"), "{reason}");
}

#[test]
fn native_sidecar_by_default_after_mesh_init_and_before_other_init_containers() {
    let mut p = pod(&[(meta::INJECT, "enabled")]);
    p["spec"]["initContainers"] = json!([{ "name": "migrate", "image": "m:1" }]);
    p["spec"]["volumes"] = json!([{ "name": "data", "emptyDir": {} }]);
    let out = injected(&p, &ns("demo", &[]));
    assert_eq!(
        names(&out, "initContainers"),
        ["mesh-init", "mesh-proxy", "migrate"]
    );
    assert_eq!(names(&out, "containers"), ["app"]);
    let proxy = find(&out, "initContainers", "mesh-proxy");
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    let vols: Vec<_> = out["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    assert_eq!(vols, ["data", pod::TOKEN_VOLUME, pod::INIT_RUN_VOLUME]);
}

#[test]
fn classic_sidecar_on_request_is_the_first_container() {
    for (values, annotations) in [
        (
            {
                let mut v = Values::default();
                v.proxy.native_sidecar = false;
                v
            },
            vec![(meta::INJECT, "enabled")],
        ),
        (
            Values::default(),
            vec![
                (meta::INJECT, "enabled"),
                ("config.mesh.rs/proxy-native-sidecar", "false"),
            ],
        ),
    ] {
        let p = pod(&annotations);
        let Decision::Inject(patch) = run(&p, &ns("demo", &[]), None, &values) else {
            panic!("expected injection");
        };
        let out = applied(&p, &patch);
        assert_eq!(names(&out, "initContainers"), ["mesh-init"]);
        assert_eq!(names(&out, "containers"), ["mesh-proxy", "app"]);
        let proxy = find(&out, "containers", "mesh-proxy");
        assert!(proxy.get("restartPolicy").is_none() && proxy.get("startupProbe").is_none());
    }
}

#[test]
fn missing_maps_and_lists_are_created_and_keys_escaped() {
    let p = json!({
        "metadata": { "annotations": { "mesh.rs/inject": "enabled" } },
        "spec": { "containers": [{ "name": "app", "image": "a" }] },
    });
    let Decision::Inject(patch) = run(
        &p,
        &ns("demo", &[]),
        Some(&Owner {
            kind: "Deployment".into(),
            name: "web".into(),
        }),
        &Values::default(),
    ) else {
        panic!("expected injection");
    };
    let json = patch.to_json().to_string();
    assert!(
        json.contains("/metadata/annotations/mesh.rs~1trust-root-sha256"),
        "{json}"
    );
    assert!(
        json.contains("\"/metadata/labels\""),
        "the missing map is added whole: {json}"
    );
    let out = applied(&p, &patch);
    let labels = &out["metadata"]["labels"];
    assert_eq!(labels[meta::CONTROL_PLANE_NS], "mesh-system");
    assert_eq!(labels[meta::WORKLOAD_NS], "demo");
    assert_eq!(labels["mesh.rs/proxy-deployment"], "web");
    let annotations = &out["metadata"]["annotations"];
    assert_eq!(annotations[meta::PROXY_VERSION], crate::install::VERSION);
    assert_eq!(annotations[meta::CREATED_BY], "mesh/test 0");
    assert_eq!(annotations[meta::INJECT], "enabled", "kept");
    assert_eq!(names(&out, "initContainers"), ["mesh-init", "mesh-proxy"]);
    assert_eq!(out["spec"]["volumes"].as_array().map(Vec::len), Some(2));
    assert_eq!(patch::pointer(&["a~b", "c/d"]), "/a~0b/c~1d");
}

#[test]
fn an_owner_name_too_long_for_a_label_is_left_out() {
    let long = "w".repeat(64);
    let p = pod(&[(meta::INJECT, "enabled")]);
    let Decision::Inject(patch) = run(
        &p,
        &ns("demo", &[]),
        Some(&Owner {
            kind: "Deployment".into(),
            name: long,
        }),
        &Values::default(),
    ) else {
        panic!("expected injection");
    };
    let out = applied(&p, &patch);
    assert!(out["metadata"]["labels"]
        .get("mesh.rs/proxy-deployment")
        .is_none());
    assert_eq!(
        out["metadata"]["labels"]["app"], "web",
        "existing labels kept"
    );
}

#[test]
fn trust_root_hash_is_sha256_of_the_pem() {
    assert_eq!(
        trust_root_sha256("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let out = injected(&pod(&[(meta::INJECT, "enabled")]), &ns("demo", &[]));
    assert_eq!(
        out["metadata"]["annotations"][meta::TRUST_ROOT_SHA256],
        trust_root_sha256(ANCHORS).as_str()
    );
}

#[test]
fn the_proxy_finds_and_verifies_the_control_plane() {
    let values = Values {
        cluster_domain: "k8s.example".into(),
        trust_domain: "mesh.example".into(),
        ..Values::default()
    };
    let p = pod(&[(meta::INJECT, "enabled")]);
    let Decision::Inject(patch) = run(&p, &ns("demo", &[]), None, &values) else {
        panic!("expected injection");
    };
    let out = applied(&p, &patch);
    let env = env_of(find(&out, "initContainers", "mesh-proxy"));
    let s = |k: &str| env[k].as_str().unwrap_or_else(|| panic!("{k}")).to_string();
    assert_eq!(
        s("MESH_PROXY_DESTINATION_ADDR"),
        "mesh-destination.mesh-system.svc.k8s.example:8086"
    );
    assert_eq!(
        s("MESH_PROXY_IDENTITY_ADDR"),
        "mesh-identity.mesh-system.svc.k8s.example:8080"
    );
    assert_eq!(
        s("MESH_PROXY_IDENTITY_NAME"),
        "$(_pod_sa).$(_pod_ns).serviceaccount.identity.mesh.mesh.example"
    );
    assert_eq!(
        s("MESH_PROXY_DESTINATION_SVC_NAME"),
        "mesh-destination.mesh-system.serviceaccount.identity.mesh.mesh.example"
    );
    assert_eq!(
        s("MESH_PROXY_IDENTITY_SVC_NAME"),
        "mesh-identity.mesh-system.serviceaccount.identity.mesh.mesh.example"
    );
    assert_eq!(
        s("MESH_PROXY_TAP_SVC_NAME"),
        "mesh-tap.mesh-system.serviceaccount.identity.mesh.mesh.example"
    );
    assert_eq!(s("MESH_PROXY_IDENTITY_TRUST_ANCHORS"), ANCHORS);
    assert_eq!(
        s("MESH_PROXY_IDENTITY_TOKEN_FILE"),
        "/var/run/secrets/tokens/mesh-identity/token"
    );
    assert_eq!(
        env["_pod_sa"]["fieldRef"]["fieldPath"],
        "spec.serviceAccountName"
    );
    // `$(VAR)` expands only variables defined earlier in the list.
    let order: Vec<_> = find(&out, "initContainers", "mesh-proxy")["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect();
    let at = |n: &str| order.iter().position(|x| x == n).expect(n);
    assert!(at("_pod_sa") < at("MESH_PROXY_IDENTITY_NAME"));
    assert!(at("_pod_ns") < at("MESH_PROXY_DESTINATION_CONTEXT"));
    let token = &out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "identity.mesh.rs");
    assert_eq!(token["expirationSeconds"], 86400);
}

#[test]
fn the_proxy_gets_its_inbound_policy_settings() {
    let mut p = pod(&[(meta::INJECT, "enabled")]);
    p["spec"]["containers"][0]["ports"] = json!([
        { "containerPort": 8080 },
        { "containerPort": 9090, "protocol": "TCP", "name": "grpc" },
        { "containerPort": 5353, "protocol": "UDP" },
    ]);
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "admin", "image": "a:1", "ports": [{ "containerPort": 80 }] }));
    // The install's default...
    let out = injected(&p, &ns("demo", &[]));
    let env = env_of(find(&out, "initContainers", "mesh-proxy"));
    assert_eq!(
        env["MESH_PROXY_POLICY_WORKLOAD"],
        "{\"ns\":\"$(_pod_ns)\",\"pod\":\"$(_pod_name)\"}"
    );
    assert_eq!(
        env["MESH_PROXY_INBOUND_DEFAULT_POLICY"],
        "all-unauthenticated"
    );
    // TCP ports only, sorted, from every container.
    assert_eq!(env["MESH_PROXY_INBOUND_PORTS"], "80,8080,9090");
    // ...the namespace's, and the pod's over it.
    let namespace = ns("demo", &[(meta::DEFAULT_INBOUND_POLICY, "deny")]);
    let out = injected(&p, &namespace);
    let env = env_of(find(&out, "initContainers", "mesh-proxy"));
    assert_eq!(env["MESH_PROXY_INBOUND_DEFAULT_POLICY"], "deny");
    // The namespace's annotation is copied onto the pod, where the controller reads it.
    assert_eq!(
        out["metadata"]["annotations"][meta::DEFAULT_INBOUND_POLICY],
        "deny"
    );
    p["metadata"]["annotations"][meta::DEFAULT_INBOUND_POLICY] = "all-authenticated".into();
    let out = injected(&p, &namespace);
    let env = env_of(find(&out, "initContainers", "mesh-proxy"));
    assert_eq!(
        env["MESH_PROXY_INBOUND_DEFAULT_POLICY"],
        "all-authenticated"
    );
    // A pod without ports: none watched eagerly.
    let out = injected(&pod(&[(meta::INJECT, "enabled")]), &ns("demo", &[]));
    assert!(!env_of(find(&out, "initContainers", "mesh-proxy"))
        .contains_key("MESH_PROXY_INBOUND_PORTS"));
    // The install's value is checked as an annotation would be.
    let mut values = Values::default();
    values.proxy.default_inbound_policy = "cluster-authenticated".into();
    assert!(settings::check_values(&values).is_ok());
    values.proxy.default_inbound_policy = "allow-all".into();
    let e = settings::check_values(&values).unwrap_err();
    assert!(e.contains("default-inbound-policy"), "{e}");
}

#[test]
fn config_annotations_pod_over_namespace() {
    let p = pod(&[
        (meta::INJECT, "enabled"),
        ("config.mesh.rs/proxy-log-level", "debug"),
        ("config.mesh.rs/skip-outbound-ports", "3306,5000-5010"),
        ("config.mesh.rs/proxy-memory-limit", "1Gi"),
    ]);
    let namespace = ns(
        "demo",
        &[
            ("config.mesh.rs/proxy-log-level", "trace"),
            ("config.mesh.rs/opaque-ports", "4000"),
            ("config.mesh.rs/proxy-image", "registry.example/proxy"),
            ("config.mesh.rs/proxy-version", "v9"),
            ("config.mesh.rs/admission-webhooks", "enabled"),
        ],
    );
    let out = injected(&p, &namespace);
    let proxy = find(&out, "initContainers", "mesh-proxy");
    let env = env_of(proxy);
    assert_eq!(env["MESH_PROXY_LOG"], "debug");
    assert_eq!(env["MESH_PROXY_OPAQUE_PORTS"], "4000");
    assert_eq!(proxy["image"], "registry.example/proxy:v9");
    assert_eq!(proxy["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(out["metadata"]["annotations"][meta::PROXY_VERSION], "v9");
    let init = find(&out, "initContainers", "mesh-init");
    let args: Vec<_> = init["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "init",
            "--proxy-uid",
            "2102",
            "--inbound-port",
            "4143",
            "--outbound-port",
            "4140",
            "--skip-outbound-ports",
            "3306,5000-5010"
        ]
    );
}

#[test]
fn invalid_settings_are_recorded_skips_naming_the_annotation() {
    for (key, value, expect) in [
        ("config.mesh.rs/proxy-cpu-limit", "lots", "quantity"),
        ("config.mesh.rs/skip-inbound-ports", "0", "ports like"),
        ("config.mesh.rs/skip-inbound-ports", "90-80", "ports like"),
        ("config.mesh.rs/opaque-ports", "70000", "ports like"),
        ("config.mesh.rs/proxy-log-level", "loud", "log filter"),
        (
            "config.mesh.rs/proxy-native-sidecar",
            "yes",
            "true or false",
        ),
        ("config.mesh.rs/proxy-version", "v1 beta", "image tag"),
        (
            "config.mesh.rs/default-inbound-policy",
            "allow",
            "one of all-unauthenticated",
        ),
        ("config.mesh.rs/proxy-log-levle", "debug", "unknown setting"),
        (
            "config.mesh.rs/proxy-memory-request",
            "2Gi",
            "over its limit",
        ),
    ] {
        let p = pod(&[(meta::INJECT, "enabled"), (key, value)]);
        let (reason, patch) = skipped(decide_one(&p, &ns("demo", &[])));
        assert!(
            reason.contains(key) && reason.contains(expect),
            "{key}: {reason}"
        );
        if expect != "over its limit" {
            assert!(reason.starts_with("pod annotation"), "{reason}");
        }
        let out = applied(&p, &patch);
        assert_eq!(names(&out, "containers"), ["app"]);
    }
    let (reason, _) = skipped(decide_one(
        &pod(&[(meta::INJECT, "enabled")]),
        &ns("demo", &[("config.mesh.rs/proxy-cpu-request", "-1")]),
    ));
    assert!(reason.starts_with("namespace annotation"), "{reason}");
}

#[test]
fn security_contexts_are_restricted() {
    let out = injected(&pod(&[(meta::INJECT, "enabled")]), &ns("demo", &[]));
    let proxy = &find(&out, "initContainers", "mesh-proxy")["securityContext"];
    assert_eq!(proxy["runAsNonRoot"], true);
    assert_eq!(proxy["runAsUser"], 2102);
    assert_eq!(proxy["readOnlyRootFilesystem"], true);
    assert_eq!(proxy["allowPrivilegeEscalation"], false);
    assert_eq!(proxy["capabilities"], json!({ "drop": ["ALL"] }));
    assert_eq!(proxy["seccompProfile"]["type"], "RuntimeDefault");
    let init = find(&out, "initContainers", "mesh-init");
    let sc = &init["securityContext"];
    assert_eq!(
        sc["capabilities"],
        json!({ "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] })
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(init["volumeMounts"][0]["mountPath"], "/run");
}

#[test]
fn quantities_ports_and_filters() {
    for q in ["1", "100m", "0.5", "64Mi", "1G", "1e3", "+2", ".5"] {
        assert!(settings::is_quantity(q), "{q}");
    }
    for q in ["", "lots", "1.2.3", "-1", "1Mb", "m", "1e"] {
        assert!(!settings::is_quantity(q), "{q}");
    }
    assert_eq!(
        settings::quantity_value("1Gi"),
        Some(1024.0 * 1024.0 * 1024.0)
    );
    assert_eq!(settings::quantity_value("500m"), Some(0.5));
    assert!(settings::is_port_list("22, 8000-8010"));
    assert!(!settings::is_port_list("22,,23") && !settings::is_port_list(""));
    assert!(settings::check_values(&Values::default()).is_ok());
    let mut bad = Values::default();
    bad.proxy.skip_inbound_ports = "ssh".into();
    let e = settings::check_values(&bad).unwrap_err();
    assert!(e.contains("skip-inbound-ports"), "{e}");
}

#[test]
fn odd_pods_get_patches_that_apply() {
    for p in [
        json!({ "metadata": { "annotations": { "mesh.rs/inject": "enabled" }, "labels": 3 },
                "spec": { "containers": [{ "name": "a", "image": "a" }], "initContainers": null, "volumes": {} } }),
        json!({ "metadata": { "annotations": { "mesh.rs/inject": "enabled" } }, "spec": { "containers": 3 } }),
        json!({ "metadata": "x", "spec": {} }),
    ] {
        match decide_one(&p, &ns("demo", &[(meta::INJECT, "enabled")])) {
            Decision::Inject(patch) | Decision::Skip { patch, .. } => {
                applied(&p, &patch);
            }
            Decision::NotAsked => {}
        }
    }
}

#[test]
fn namespace_settings_and_install_opaque_ports_are_copied_onto_the_pod() {
    let p = pod(&[
        (meta::INJECT, "enabled"),
        ("config.mesh.rs/proxy-log-level", "debug"),
    ]);
    let namespace = ns(
        "demo",
        &[
            ("config.mesh.rs/proxy-log-level", "trace"),
            ("config.mesh.rs/skip-inbound-ports", "22"),
            ("config.mesh.rs/admission-webhooks", "enabled"),
        ],
    );
    let mut values = Values::default();
    values.proxy.opaque_ports = "6000".into();
    let Decision::Inject(patch) = run(&p, &namespace, None, &values) else {
        panic!("expected injection");
    };
    let out = applied(&p, &patch);
    let a = &out["metadata"]["annotations"];
    assert_eq!(
        a["config.mesh.rs/proxy-log-level"], "debug",
        "the pod's own stays"
    );
    assert_eq!(
        a["config.mesh.rs/skip-inbound-ports"], "22",
        "the namespace's is copied"
    );
    assert_eq!(
        a[meta::OPAQUE_PORTS],
        "6000",
        "the install's opaque ports are recorded"
    );
    assert!(a.get(meta::ADMISSION_WEBHOOKS).is_none());
    // A pod naming its own opaque ports keeps them.
    let p = pod(&[(meta::INJECT, "enabled"), (meta::OPAQUE_PORTS, "7000")]);
    let Decision::Inject(patch) = run(&p, &ns("demo", &[]), None, &values) else {
        panic!("expected injection");
    };
    assert_eq!(
        applied(&p, &patch)["metadata"]["annotations"][meta::OPAQUE_PORTS],
        "7000"
    );
    // Nothing set anywhere: nothing copied.
    let p = pod(&[(meta::INJECT, "enabled")]);
    let out = injected(&p, &ns("demo", &[]));
    assert!(out["metadata"]["annotations"]
        .get(meta::OPAQUE_PORTS)
        .is_none());
}
