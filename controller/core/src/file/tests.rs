use super::*;
use crate::index::{Snapshot, Target};

const TD: &str = "cluster.local";

const DEMO: &str = r#"
services:
  - name: voting
    namespace: emojivoto
    clusterIPs: ["198.19.0.10"]
    opaquePorts: [3306]
    ports:
      - {port: 80, name: http, targetPort: 8080}
    endpoints:
      - address: 127.0.0.1:7031
        hostname: voting-0
        labels: {pod: voting-0, deployment: voting, serviceaccount: voting}
        identity: voting.emojivoto.serviceaccount.identity.mesh.cluster.local
      - address: 127.0.0.1:7032
        ready: false
      - address: 127.0.0.2
  - name: web
    namespace: emojivoto
    endpoints:
      - address: "[::1]:7040"
profiles: []
"#;

fn err(text: &str) -> InvalidFile {
    parse(text, TD).unwrap_err()
}

#[test]
fn parses_the_documented_format() {
    let d = parse(DEMO, TD).unwrap();
    assert_eq!(d.services.len(), 2);
    let voting = &d.services[0];
    assert_eq!(voting.key, ObjKey::new("emojivoto", "voting"));
    assert_eq!(
        voting.cluster_ips,
        vec!["198.19.0.10".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(voting.opaque_ports, PortSet::from_ports([3306]));
    assert_eq!(
        voting.ports,
        vec![ServicePort {
            name: Some("http".into()),
            port: 80,
            target_port: TargetPort::Number(8080),
        }]
    );
    // Explicit ports split slices; the bare IP serves on the target port.
    let voting_slices: Vec<_> = d
        .slices
        .iter()
        .filter(|s| &*s.service == "voting")
        .collect();
    let mut ports: Vec<u16> = voting_slices.iter().map(|s| s.ports[0].port).collect();
    ports.sort_unstable();
    assert_eq!(ports, [7031, 7032, 8080]);
    for s in &voting_slices {
        assert_eq!(s.ports[0].name.as_deref(), Some("http"));
    }

    // The default port, and an IPv6 endpoint.
    let web = &d.services[1];
    assert_eq!(web.ports[0].port, 80);
    let web_slice = d.slices.iter().find(|s| &*s.service == "web").unwrap();
    assert_eq!(web_slice.ports[0].port, 7040);
    assert_eq!(
        web_slice.endpoints[0].addresses,
        vec!["::1".parse::<IpAddr>().unwrap()]
    );

    // One synthetic pod: the endpoint with labels.
    assert_eq!(d.pods.len(), 1);
    let pod = &d.pods[0];
    assert_eq!(pod.key, ObjKey::new("emojivoto", "voting-0"));
    assert_eq!(&*pod.service_account, "voting");
    assert_eq!(pod.owner, Some(("deployment".into(), "voting".into())));
    assert!(pod.meshed && pod.running);
}

#[test]
fn file_endpoints_resolve_through_the_index() {
    let index = Index::new("cluster.local", TD);
    apply(&index, parse(DEMO, TD).unwrap());
    assert!(index.is_ready());
    let mut sub = index.subscribe(
        index
            .parse("voting.emojivoto.svc.cluster.local:80", "")
            .unwrap(),
    );
    let snap: Arc<Snapshot> = sub.current();
    let addrs: Vec<String> = snap.endpoints.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(
        addrs,
        ["127.0.0.1:7031", "127.0.0.2:8080"],
        "the not-ready one is excluded"
    );
    let meshed = &snap.endpoints[0];
    assert_eq!(
        meshed.identity.as_ref().map(|i| &*i.name),
        Some("voting.emojivoto.serviceaccount.identity.mesh.cluster.local")
    );
    assert!(meshed.h2);
    assert_eq!(
        meshed.labels.get("deployment").map(|v| &**v),
        Some("voting")
    );
    assert!(!snap.profile.opaque);

    // The synthetic pod is found by IP, and the cluster IP leads to the service.
    let mut by_ip = index.subscribe(Target::Addr("127.0.0.1:7031".parse().unwrap()));
    assert!(by_ip.current().endpoints[0].identity.is_some());
    let mut by_cluster_ip = index.subscribe(Target::Addr("198.19.0.10:80".parse().unwrap()));
    assert_eq!(by_cluster_ip.current().endpoints.len(), 2);
    // Headless-style hostname lookups.
    let mut host = index.subscribe(
        index
            .parse("voting-0.voting.emojivoto.svc.cluster.local:80", "")
            .unwrap(),
    );
    assert_eq!(host.current().endpoints.len(), 1);
}

#[test]
fn multi_port_services() {
    let d = parse(
        r#"
services:
  - name: api
    ports:
      - {port: 80, name: http, targetPort: 8080}
      - {port: 9000, name: admin}
    endpoints:
      - address: 198.18.0.1
"#,
        TD,
    )
    .unwrap();
    assert_eq!(d.services[0].key.namespace.as_ref(), "default");
    let index = Index::new("cluster.local", TD);
    apply(&index, d);
    let mut http = index.subscribe(index.parse("api.default:80", "").unwrap());
    assert_eq!(
        http.current().endpoints[0].addr.to_string(),
        "198.18.0.1:8080"
    );
    let mut admin = index.subscribe(index.parse("api.default:9000", "").unwrap());
    assert_eq!(
        admin.current().endpoints[0].addr.to_string(),
        "198.18.0.1:9000"
    );
}

#[test]
fn one_pod_in_two_services() {
    let d = parse(
        r#"
services:
  - name: a
    endpoints: [{address: "198.18.0.1:80", labels: {pod: p, deployment: d}}]
  - name: b
    endpoints: [{address: "198.18.0.1:81", labels: {pod: p, deployment: d}}]
"#,
        TD,
    )
    .unwrap();
    assert_eq!(d.pods.len(), 1);
    let e = err(r#"
services:
  - name: a
    endpoints: [{address: "198.18.0.1:80", labels: {pod: p, deployment: d}}]
  - name: b
    endpoints: [{address: "198.18.0.2:80", labels: {pod: p, statefulset: d}}]
"#);
    assert_eq!(e.field, "services[1].endpoints[0].labels");
    assert!(
        e.message
            .contains("pod default/p is described differently at services[0].endpoints[0]"),
        "{e}"
    );
}

#[test]
fn syntax_errors_name_line_column_and_field() {
    let e = err("services:\n  - name: web\n    endpoints:\n      - address: 198.18.0.1\n      - address: nope:80\n");
    assert_eq!(e.field, "services[0].endpoints[1].address");
    assert!(e.message.starts_with("invalid address \"nope:80\""), "{e}");
    assert_eq!(e.location.map(|(l, _)| l), Some(5), "{e}");
    assert!(e.to_string().starts_with("line 5 column "), "{e}");

    // Unknown fields are rejected, not ignored.
    let e = err("services:\n  - name: web\n    endpionts: []\n");
    assert!(e.field.starts_with("services[0]"), "{e}");
    assert!(e.message.contains("unknown field `endpionts`"), "{e}");
    assert_eq!(e.location.map(|(l, _)| l), Some(3), "{e}");

    let e = err("servics: []\n");
    assert!(e.message.contains("unknown field `servics`"), "{e}");

    // Bad cluster IPs and ports.
    let e = err("services:\n  - name: web\n    clusterIPs: [198.18.0.300]\n");
    assert_eq!(e.field, "services[0].clusterIPs[0]");
    let e = err("services:\n  - name: web\n    ports: [{port: 70000}]\n");
    assert_eq!(e.field, "services[0].ports[0].port");

    // Not YAML at all.
    let e = err("services: [\n");
    assert!(e.location.is_some(), "{e}");

    let e = err("  \n");
    assert!(e.message.contains("empty"), "{e}");
}

#[test]
fn semantic_errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "services:\n  - name: a\n  - name: a\n",
            "services[1].name",
            "duplicate service default/a (first at services[0])",
        ),
        (
            "services:\n  - name: a\n    ports: [{port: 80, name: x}, {port: 81, name: y}]\n    endpoints: [{address: \"198.18.0.1:80\"}]\n",
            "services[0].endpoints[0].address",
            "a port is only allowed when the service has one port (it has 2)",
        ),
        (
            "services:\n  - name: a\n    ports: [{port: 80}, {port: 81, name: y}]\n",
            "services[0].ports[0].name",
            "needs a name",
        ),
        (
            "services:\n  - name: a\n    ports: [{port: 80, name: x}, {port: 80, name: y}]\n",
            "services[0].ports[1].port",
            "duplicate port 80",
        ),
        ("services:\n  - name: A\n", "services[0].name", "invalid name \"A\""),
        (
            "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1}, {address: 198.18.0.1}]\n",
            "services[0].endpoints[1].address",
            "duplicate endpoint 198.18.0.1 (first at endpoints[0])",
        ),
        (
            "services:\n  - name: a\n    clusterIPs: [198.18.101.1]\n  - name: b\n    clusterIPs: [198.18.101.1]\n",
            "services[1].clusterIPs[0]",
            "already used by services[0]",
        ),
        (
            "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, labels: {deployment: a, app: b}}]\n",
            "services[0].endpoints[0].labels.deployment",
            "one owner kind",
        ),
        (
            "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, identity: a.other.serviceaccount.identity.mesh.cluster.local}]\n",
            "services[0].endpoints[0].identity",
            "expected `<serviceaccount>.default.serviceaccount.identity.mesh.cluster.local`",
        ),
        (
            "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, labels: {serviceaccount: x}, identity: y.default.serviceaccount.identity.mesh.cluster.local}]\n",
            "services[0].endpoints[0].identity",
            "names service account \"y\" but labels.serviceaccount is \"x\"",
        ),
        ("services:\n  - name: a\n    ports: []\n", "services[0].ports", "needs a port"),
        (
            "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, admin: 198.18.0.1:4191}]\n",
            "services[0].endpoints[0].admin",
            "without identity is not meshed",
        ),
        (
            "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, admin: 198.18.0.1, identity: sa.default.serviceaccount.identity.mesh.cluster.local}]\n",
            "services[0].endpoints[0].admin",
            "invalid admin address \"198.18.0.1\": expected `ip:port`",
        ),
        (
            "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, admin: \"198.18.0.1:0\", identity: sa.default.serviceaccount.identity.mesh.cluster.local}]\n",
            "services[0].endpoints[0].admin",
            "invalid admin address",
        ),
        (
            "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, tap: 198.18.0.1:4190}]\n",
            "services[0].endpoints[0].tap",
            "without identity is not meshed",
        ),
        (
            "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, tap: \"198.18.0.1:0\", identity: sa.default.serviceaccount.identity.mesh.cluster.local}]\n",
            "services[0].endpoints[0].tap",
            "invalid tap address \"198.18.0.1:0\": expected `ip:port`",
        ),
        (
            "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, labels: {pod: p}, identity: sa.default.serviceaccount.identity.mesh.cluster.local, tap: \"127.0.0.1:1\"}]\n  - name: b\n    endpoints: [{address: 198.18.0.1, labels: {pod: p}, identity: sa.default.serviceaccount.identity.mesh.cluster.local, tap: \"127.0.0.1:2\"}]\n",
            "services[1].endpoints[0].labels",
            "described differently",
        ),
        (
            "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, labels: {pod: p}, identity: sa.default.serviceaccount.identity.mesh.cluster.local, admin: \"127.0.0.1:1\"}]\n  - name: b\n    endpoints: [{address: 198.18.0.1, labels: {pod: p}, identity: sa.default.serviceaccount.identity.mesh.cluster.local, admin: \"127.0.0.1:2\"}]\n",
            "services[1].endpoints[0].labels",
            "described differently",
        ),
    ];
    for (text, field, message) in cases {
        let e = err(text);
        assert_eq!(&e.field, field, "{text}: {e}");
        assert!(e.message.contains(message), "{text}: {e}");
    }
}

#[test]
fn identity_without_labels_makes_a_meshed_pod() {
    let d = parse(
        "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, identity: sa.default.serviceaccount.identity.mesh.cluster.local}]\n",
        TD,
    )
    .unwrap();
    assert_eq!(d.pods.len(), 1);
    assert_eq!(d.pods[0].key.name.as_ref(), "a-0");
    assert_eq!(d.pods[0].service_account.as_ref(), "sa");
    assert!(d.pods[0].meshed);
    // Its proxy's admin server: at its IP on 4191, unless the file says where.
    assert_eq!(
        d.pods[0].admin_addr(),
        Some("198.18.0.1:4191".parse().unwrap())
    );
    let d = parse(
        "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, identity: sa.default.serviceaccount.identity.mesh.cluster.local, admin: \"127.0.0.1:14191\"}]\n",
        TD,
    )
    .unwrap();
    assert_eq!(
        d.pods[0].admin_addr(),
        Some("127.0.0.1:14191".parse().unwrap())
    );
    // And its tap server: at its IP on 4190, unless the file says where.
    assert_eq!(
        d.pods[0].tap_addr(),
        Some("198.18.0.1:4190".parse().unwrap())
    );
    let d = parse(
        "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, identity: sa.default.serviceaccount.identity.mesh.cluster.local, tap: \"127.0.0.1:14190\"}]\n",
        TD,
    )
    .unwrap();
    assert_eq!(
        d.pods[0].tap_addr(),
        Some("127.0.0.1:14190".parse().unwrap())
    );
    // Another trust domain is another name.
    let e = parse(
        "services:\n  - name: a\n    endpoints: [{address: 198.18.0.1, identity: sa.default.serviceaccount.identity.mesh.cluster.local}]\n",
        "example.org",
    )
    .unwrap_err();
    assert!(e.message.contains("trust domain \"example.org\""), "{e}");
}

#[test]
fn empty_lists_may_be_written_as_nothing() {
    let d = parse(
        "services:\n  - name: a\n    endpoints:\n    clusterIPs:\nprofiles:\n",
        TD,
    )
    .unwrap();
    assert_eq!(d.services.len(), 1);
    assert!(d.slices.is_empty() && d.profiles.is_empty());
    // A repeated key is an error at the repetition.
    let e = err("services:\n  - name: a\n    name: b\n");
    assert_eq!(e.field, "services[0].name");
    assert_eq!(e.location, Some((3, 5)), "{e}");
}

const POLICY_FILE: &str = r#"
services:
  - name: voting
    namespace: emojivoto
    endpoints:
      - address: 198.18.0.1
        labels: {pod: voting-0, deployment: voting}
        defaultInboundPolicy: all-authenticated
        namedPorts: {grpc: 8080}
        probes: [{port: 8080, path: "/ready?full=1"}, {port: 8080}]
policies:
  - apiVersion: policy.mesh.rs/v1alpha1
    kind: Server
    metadata: {name: voting, namespace: emojivoto}
    spec: {podSelector: {matchLabels: {deployment: voting}}, port: grpc, proxyProtocol: gRPC}
  - apiVersion: policy.mesh.rs/v1alpha1
    kind: MeshTLSAuthentication
    metadata: {name: web, namespace: emojivoto}
    spec: {identities: ["web.emojivoto.serviceaccount.identity.mesh.cluster.local"]}
"#;

#[test]
fn policies_and_policy_pods_parse() {
    let d = parse(POLICY_FILE, TD).unwrap();
    let kinds: Vec<(&str, &str)> = d
        .policies
        .iter()
        .map(|(ns, r)| (ns.as_str(), r.kind().name()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("emojivoto", "Server"),
            ("emojivoto", "MeshTLSAuthentication")
        ]
    );
    let [pod] = &d.policy_pods[..] else {
        panic!("{:?}", d.policy_pods)
    };
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str()),
        ("emojivoto", "voting-0")
    );
    assert_eq!(
        pod.labels.get("deployment").map(String::as_str),
        Some("voting")
    );
    assert_eq!(pod.default_policy.as_deref(), Some("all-authenticated"));
    assert_eq!(pod.named_ports["grpc"], [8080].into());
    assert_eq!(
        pod.probes[&8080],
        ["/".to_string(), "/ready".to_string()].into()
    );
}

#[test]
fn bad_policies_and_pod_fields_name_their_field() {
    for (from, to, field) in [
        ("port: grpc,", "port: 0,", "policies[0].spec.port"),
        ("kind: MeshTLSAuthentication", "kind: Nope", "policies[1]"),
        (
            "defaultInboundPolicy: all-authenticated",
            "defaultInboundPolicy: allow-all",
            "services[0].endpoints[0].defaultInboundPolicy",
        ),
        (
            "namedPorts: {grpc: 8080}",
            "namedPorts: {GRPC: 8080}",
            "services[0].endpoints[0].namedPorts.GRPC",
        ),
        (
            "{port: 8080}]",
            "{port: 0}]",
            "services[0].endpoints[0].probes[1].port",
        ),
    ] {
        assert!(POLICY_FILE.contains(from), "{from}");
        let e = err(&POLICY_FILE.replace(from, to));
        assert!(e.field.starts_with(field), "{to}: {e}");
    }
    // The same object twice.
    let twice = format!(
        "{POLICY_FILE}  - apiVersion: policy.mesh.rs/v1alpha1\n    kind: Server\n    metadata: {{name: voting, namespace: emojivoto}}\n    spec: {{podSelector: {{}}, port: 80}}\n"
    );
    let e = err(&twice);
    assert_eq!(e.field, "policies[2].metadata.name", "{e}");
    assert!(e.message.contains("first at policies[0]"), "{e}");
}
