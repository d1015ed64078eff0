use super::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inject")
        .join(name)
}

fn args(input: PathBuf) -> InjectArgs {
    InjectArgs {
        input,
        manual: false,
        values: None,
        identity_trust_anchors_file: None,
        namespace: "default".into(),
        proxy: ProxyFlags::default(),
    }
}

fn run_inject(a: InjectArgs) -> anyhow::Result<(String, String)> {
    let (mut out, mut report) = (Vec::new(), Vec::new());
    inject(a, &mut out, &mut report)?;
    Ok((String::from_utf8(out)?, String::from_utf8(report)?))
}

fn run_uninject(text: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("in.yaml");
    std::fs::write(&path, text).expect("write");
    let (mut out, mut report) = (Vec::new(), Vec::new());
    uninject(UninjectArgs { input: path }, &mut out, &mut report).expect("uninject");
    (
        String::from_utf8(out).expect("utf8"),
        String::from_utf8(report).expect("utf8"),
    )
}

/// The documents of a stream as ordered trees.
fn trees(text: &str) -> Vec<Node> {
    crate::profile::validate::documents(text)
        .iter()
        .map(|d| mesh_core::yaml::from_str(d).expect("yaml"))
        .collect()
}

fn keys(node: &Node) -> Vec<String> {
    match node {
        Node::Map(entries) => entries.iter().map(|(k, _)| k.clone()).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn annotates_every_pod_template_namespace_and_list_item_in_order() {
    let (out, report) = run_inject(args(fixture("multi.yaml"))).expect("inject");
    assert_eq!(
        report,
        "namespace \"shop\" injected\ndeployment \"cart\" injected\ncronjob \"nightly\" injected\n"
    );
    let docs = trees(&out);
    assert_eq!(docs.len(), 3);
    assert_eq!(
        docs[0]
            .at(&["metadata", "annotations", meta::INJECT])
            .and_then(Node::as_str),
        Some("enabled")
    );
    let Some(Node::Seq(items)) = docs[1].get("items") else {
        panic!("a List")
    };
    assert_eq!(items[0].get("kind").and_then(Node::as_str), Some("Service"));
    assert!(
        items[0].at(&["metadata", "annotations"]).is_none(),
        "a Service is left alone"
    );
    let annotations = items[1]
        .at(&["spec", "template", "metadata", "annotations"])
        .expect("annotations");
    assert_eq!(
        keys(annotations),
        ["zeta", "alpha", meta::INJECT],
        "key order kept, the new key last"
    );
    assert_eq!(
        keys(&items[1]),
        ["apiVersion", "kind", "metadata", "spec"],
        "unrelated fields untouched"
    );
    let cron = docs[2]
        .at(&[
            "spec",
            "jobTemplate",
            "spec",
            "template",
            "metadata",
            "annotations",
            meta::INJECT,
        ])
        .and_then(Node::as_str);
    assert_eq!(cron, Some("enabled"));
    // Uninject gives back the original, key order included.
    let (back, report) = run_uninject(&out);
    assert_eq!(
        trees(&back),
        trees(&std::fs::read_to_string(fixture("multi.yaml")).expect("read"))
    );
    assert!(
        report.contains("deployment \"cart\" uninjected"),
        "{report}"
    );
}

#[test]
fn proxy_flags_become_checked_config_annotations() {
    let mut a = args(fixture("pod.yaml"));
    a.proxy.proxy_log_level = Some("debug".into());
    a.proxy.proxy_native_sidecar = Some(false);
    let (out, _) = run_inject(a).expect("inject");
    let doc = &trees(&out)[0];
    let ann = doc.at(&["metadata", "annotations"]).expect("annotations");
    assert_eq!(
        ann.get("config.mesh.rs/proxy-log-level")
            .and_then(Node::as_str),
        Some("debug")
    );
    assert_eq!(
        ann.get("config.mesh.rs/proxy-native-sidecar")
            .and_then(Node::as_str),
        Some("false")
    );
    let (back, _) = run_uninject(&out);
    let back = &trees(&back)[0];
    let ann = back
        .at(&["metadata", "annotations"])
        .expect("settings stay");
    assert_eq!(
        keys(ann),
        [
            "config.mesh.rs/proxy-log-level",
            "config.mesh.rs/proxy-native-sidecar"
        ]
    );

    let mut a = args(fixture("pod.yaml"));
    a.proxy.skip_inbound_ports = Some("ssh".into());
    let e = run_inject(a).expect_err("a bad port list");
    assert!(e.downcast_ref::<crate::UsageError>().is_some(), "{e}");
    assert!(
        e.to_string()
            .contains("--skip-inbound-ports \"ssh\": expected ports"),
        "{e}"
    );

    let mut a = args(fixture("pod.yaml"));
    a.proxy.default_inbound_policy = Some("deny".into());
    let (out, _) = run_inject(a).expect("inject");
    let doc = &trees(&out)[0];
    let ann = doc.at(&["metadata", "annotations"]).expect("annotations");
    assert_eq!(
        ann.get("config.mesh.rs/default-inbound-policy")
            .and_then(Node::as_str),
        Some("deny")
    );
    let mut a = args(fixture("pod.yaml"));
    a.proxy.default_inbound_policy = Some("allow".into());
    let e = run_inject(a).expect_err("an unknown policy");
    assert!(
        e.to_string()
            .contains("--default-inbound-policy \"allow\": expected one of all-unauthenticated"),
        "{e}"
    );
}

#[test]
fn manual_injection_round_trips_through_uninject() {
    let dir = tempfile::tempdir().expect("tempdir");
    let anchors = dir.path().join("ca.crt");
    std::fs::write(
        &anchors,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    for name in [
        "deployment.yaml",
        "statefulset.yaml",
        "daemonset.yaml",
        "job.yaml",
        "pod.yaml",
        "multi.yaml",
    ] {
        let mut a = args(fixture(name));
        a.manual = true;
        a.identity_trust_anchors_file = Some(anchors.clone());
        let (out, report) = run_inject(a).expect("inject");
        assert!(
            report.contains("injected") && !report.contains("skipped"),
            "{name}: {report}"
        );
        assert!(out.contains("mesh-proxy"), "{name}");
        let (back, _) = run_uninject(&out);
        let original = std::fs::read_to_string(fixture(name)).expect("read");
        assert_eq!(
            trees(&back),
            trees(&original),
            "{name}: uninject undoes --manual"
        );
    }
    let mut a = args(fixture("pod.yaml"));
    a.manual = true;
    let e = run_inject(a).expect_err("no anchors");
    assert!(
        e.to_string().contains("--identity-trust-anchors-file"),
        "{e}"
    );
}

#[test]
fn bad_input_names_the_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    for (text, needle) in [
        (
            "kind: Pod\nmetadata: {name: a}\n---\nmetadata:\n  name: [\n",
            "document 2 (line 4)",
        ),
        ("metadata: {name: a}\n", "document 1 (line 1): no kind"),
        ("---\n- a\n- b\n", "not a Kubernetes object"),
        (
            "kind: List\nitems:\n  - {kind: Pod, metadata: {name: a}}\n  - {metadata: {}}\n",
            "items[1]: no kind",
        ),
    ] {
        std::fs::write(&path, text).expect("write");
        let e = run_inject(args(path.clone())).expect_err(text);
        let e = format!("{e:#}");
        assert!(
            e.contains(needle) && e.contains("bad.yaml"),
            "{needle}: {e}"
        );
    }
}

#[test]
fn node_keeps_scalars_as_written() {
    let text = "a: \"8080\"\nb: 8080\nc: true\nd: 'true'\ne: null\nf: 1.5\ng: ''\n";
    let node: Node = mesh_core::yaml::from_str(text).expect("yaml");
    let again: Node =
        mesh_core::yaml::from_str(&mesh_core::yaml::to_string(&node).expect("yaml")).expect("yaml");
    assert_eq!(node, again);
    assert_eq!(node.get("a"), Some(&Node::Str("8080".into())));
    assert_eq!(node.get("b"), Some(&Node::Int(8080)));
    assert_eq!(node.get("d"), Some(&Node::Str("true".into())));
}
