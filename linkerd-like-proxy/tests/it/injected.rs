//! The proxy the injector describes starts: every variable `mesh_core::inject` writes
//! into the proxy's container, expanded as the kubelet expands it (downward API
//! fields, then `$(VAR)` references to earlier variables), is one this proxy knows and
//! accepts, and names the control plane as the proxy's own defaults do.

use mesh_proxy::config::Config;
use serde_json::{json, Value};
use std::collections::HashMap;

/// The container's env as the kubelet gives it to the process, for a pod `web-0` in
/// `demo` running as service account `web`.
fn expand(env: &[Value]) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    for var in env {
        let name = var["name"].as_str().expect("name").to_string();
        let value = match var.get("value").and_then(Value::as_str) {
            Some(v) => {
                // `$(NAME)` expands a variable defined earlier; others stay as written.
                let mut v = v.to_string();
                for (k, val) in &out {
                    v = v.replace(&format!("$({k})"), val);
                }
                v
            }
            None => match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => "web-0".into(),
                Some("metadata.namespace") => "demo".into(),
                Some("spec.serviceAccountName") => "web".into(),
                other => panic!("{name}: a field the test does not know: {other:?}"),
            },
        };
        out.insert(name, value);
    }
    out
}

#[test]
fn the_injected_env_is_a_valid_proxy_configuration() {
    let (anchors, _, _) = mesh_core::ca::generate_anchor_and_issuer(
        "cluster.local",
        std::time::Duration::from_secs(3600),
    );
    let pod = json!({
        "metadata": { "annotations": {
            "mesh.rs/inject": "enabled",
            "config.mesh.rs/opaque-ports": "4000-4010",
            "config.mesh.rs/skip-outbound-ports": "3306,5000-5002",
        } },
        "spec": { "containers": [{ "name": "app", "image": "app" }] },
    });
    let namespace = mesh_core::inject::Namespace {
        name: "demo".into(),
        ..Default::default()
    };
    let values = mesh_core::install::Values::default();
    let mesh_core::inject::Decision::Inject(patch) =
        mesh_core::inject::decide(mesh_core::inject::Input {
            pod: &pod,
            namespace: &namespace,
            owner: None,
            values: &values,
            trust_anchors: &anchors,
            created_by: "test",
        })
    else {
        panic!("not injected");
    };
    let mut injected = pod.clone();
    patch.apply(&mut injected).expect("applies");
    let proxy = injected["spec"]["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "mesh-proxy"))
        .expect("the proxy")
        .clone();
    let env = expand(proxy["env"].as_array().expect("env"));
    let unknown = Config::unknown_vars(env.keys().cloned());
    assert!(
        unknown.is_empty(),
        "variables this proxy does not know: {unknown:?}"
    );
    let config = Config::from_env(&env).expect("the proxy accepts its injected env");

    let discovery = config.discovery.expect("discovery on");
    assert_eq!(
        discovery.addr.authority().map(|a| a.as_str()),
        Some("mesh-destination.mesh-system.svc.cluster.local:8086")
    );
    assert_eq!(discovery.context, r#"{"ns":"demo","pod":"web-0"}"#);
    let identity = config.identity.expect("identity on");
    assert_eq!(
        identity.name,
        "web.demo.serviceaccount.identity.mesh.cluster.local"
    );
    assert_eq!(
        identity.server_name,
        "mesh-identity.mesh-system.serviceaccount.identity.mesh.cluster.local"
    );
    assert_eq!(
        identity.destination_name,
        "mesh-destination.mesh-system.serviceaccount.identity.mesh.cluster.local"
    );
    assert_eq!(
        identity.token_file,
        std::path::Path::new("/var/run/secrets/tokens/mesh-identity/token")
    );
    assert_eq!(identity.trust_anchors.len(), 1);
    let tap = config.tap.expect("tap on with identity");
    assert_eq!(
        tap.client_name,
        "mesh-tap.mesh-system.serviceaccount.identity.mesh.cluster.local"
    );
    assert_eq!(tap.listen_addr.port(), 4190);
    assert!(config.listen.opaque_ports.contains(&4005));
    // The kubelet's probes reach the admin server on the pod's IP, not only loopback.
    assert!(config.listen.admin_addr.ip().is_unspecified());
    assert_eq!(config.listen.admin_addr.port(), 4191);
    assert_eq!(config.listen.inbound_addr.port(), 4143);
    let probe_port = &proxy["readinessProbe"]["httpGet"]["port"];
    assert_eq!(probe_port, 4191);

    // `mesh-init`'s args are `mesh-proxy init`'s flags.
    let init = &injected["spec"]["initContainers"][0];
    assert_eq!(init["name"], "mesh-init");
    let args: Vec<String> = init["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("text").to_string())
        .collect();
    assert_eq!(args[0], "init");
    let parsed =
        mesh_proxy::init::InitConfig::parse(&args[1..]).expect("mesh-proxy init accepts them");
    assert_eq!(parsed.proxy_uid, 2102);
    assert_eq!(
        parsed.skip_outbound_ports.into_iter().collect::<Vec<_>>(),
        [3306, 5000, 5001, 5002]
    );
    assert_eq!((parsed.inbound_port, parsed.outbound_port), (4143, 4140));
}
