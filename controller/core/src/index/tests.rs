use super::*;
use proptest::prelude::*;
use std::net::SocketAddr;

const CD: &str = "cluster.local";

fn key(ns: &str, name: &str) -> ObjKey {
    ObjKey::new(ns, name)
}

fn port(name: Option<&str>, port: u16, target: TargetPort) -> ServicePort {
    ServicePort {
        name: name.map(Arc::from),
        port,
        target_port: target,
    }
}

fn service(ns: &str, name: &str, ips: &[&str], ports: Vec<ServicePort>) -> Service {
    Service {
        key: key(ns, name),
        cluster_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        ports,
        opaque_ports: PortSet::default(),
    }
}

/// `web` in `ns`: cluster IP 198.19.0.1, port 80 → 8080, unnamed.
fn web() -> Service {
    service(
        "ns",
        "web",
        &["198.19.0.1"],
        vec![port(None, 80, TargetPort::Number(8080))],
    )
}

fn ep(ip: &str, ready: bool, pod: Option<&str>) -> SliceEndpoint {
    SliceEndpoint {
        addresses: vec![ip.parse().unwrap()],
        ready,
        hostname: None,
        pod: pod.map(Arc::from),
    }
}

fn slice(
    ns: &str,
    name: &str,
    svc: &str,
    ports: &[(Option<&str>, u16)],
    eps: Vec<SliceEndpoint>,
) -> EndpointSlice {
    EndpointSlice {
        key: key(ns, name),
        service: svc.into(),
        ports: ports
            .iter()
            .map(|(n, p)| SlicePort {
                name: n.map(Arc::from),
                port: *p,
            })
            .collect(),
        endpoints: eps,
    }
}

fn pod(ns: &str, name: &str, ip: &str, meshed: bool) -> Pod {
    Pod {
        key: key(ns, name),
        ips: vec![ip.parse().unwrap()],
        running: true,
        service_account: "web-sa".into(),
        owner: Some(("deployment".into(), "web".into())),
        meshed,
        opaque_ports: PortSet::default(),
        admin: None,
        tap: None,
    }
}

fn addrs(s: &Snapshot) -> Vec<String> {
    s.endpoints.iter().map(|e| e.addr.to_string()).collect()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn target(path: &str) -> Target {
    parse_path(path, Some("ctx"), CD).unwrap()
}

fn svc_target(ns: &str, name: &str, port: u16) -> Target {
    Target::Service {
        service: key(ns, name),
        port,
        hostname: None,
    }
}

fn index_with_web() -> Index {
    let index = Index::new(CD, CD);
    index.apply_service(web());
    index.apply_slice(slice(
        "ns",
        "web-abc",
        "web",
        &[(None, 8080)],
        vec![
            ep("198.18.0.1", true, Some("web-1")),
            ep("198.18.0.2", true, Some("web-2")),
        ],
    ));
    index.apply_pod(pod("ns", "web-1", "198.18.0.1", true));
    index.apply_pod(pod("ns", "web-2", "198.18.0.2", false));
    index
}

// === paths ===

#[test]
fn path_forms() {
    let web80 = svc_target("ns", "web", 80);
    let web8080 = svc_target("ns", "web", 8080);
    assert_eq!(target("web.ns.svc.cluster.local:8080"), web8080);
    assert_eq!(target("web.ns.svc.cluster.local.:8080"), web8080);
    assert_eq!(target("WEB.NS.svc.cluster.local:8080"), web8080);
    assert_eq!(target("web.ns.svc.cluster.local"), web80);
    assert_eq!(target("web.ns.svc:8080"), web8080);
    assert_eq!(target("web.ns.svc."), web80);
    assert_eq!(target("web.ns:8080"), web8080);
    assert_eq!(target("web:8080"), svc_target("ctx", "web", 8080));
    assert_eq!(target("web"), svc_target("ctx", "web", 80));
    assert_eq!(parse_path("web:8080", None, CD), Ok(Target::Unknown));
    assert_eq!(parse_path("web.ns:8080", None, CD), Ok(web8080.clone()));
    assert_eq!(
        target("web-0.web.ns.svc.cluster.local:8080"),
        Target::Service {
            service: key("ns", "web"),
            port: 8080,
            hostname: Some("web-0".into()),
        }
    );
    assert_eq!(target("a.b.c.d.e:80"), Target::Unknown);
    assert_eq!(target("web.ns.svc.other.domain:80"), Target::Unknown);
    assert_eq!(
        target("web.ns.svc.cluster.local.example.com:80"),
        Target::Unknown
    );

    assert_eq!(
        target("198.18.0.1:8080"),
        Target::Addr(sa("198.18.0.1:8080"))
    );
    assert_eq!(target("198.18.0.1"), Target::Addr(sa("198.18.0.1:80")));
    assert_eq!(
        target("[2001:db8::1]:8080"),
        Target::Addr(sa("[2001:db8::1]:8080"))
    );
    assert_eq!(
        target("[2001:db8::1]"),
        Target::Addr(sa("[2001:db8::1]:80"))
    );
    assert_eq!(target("2001:db8::1"), Target::Addr(sa("[2001:db8::1]:80")));

    // A custom cluster domain.
    assert_eq!(
        parse_path("web.ns.svc.example.org:8080", None, "example.org"),
        Ok(web8080)
    );
}

#[test]
fn invalid_paths() {
    assert_eq!(parse_path("", None, CD), Err(InvalidPath::Empty));
    assert!(matches!(parse_path("web:http", None, CD), Err(InvalidPath::Port(p)) if p == "http"));
    assert!(matches!(
        parse_path("web:0", None, CD),
        Err(InvalidPath::Port(_))
    ));
    assert!(matches!(
        parse_path("web:70000", None, CD),
        Err(InvalidPath::Port(_))
    ));
    assert!(matches!(
        parse_path("198.18.0.1:", None, CD),
        Err(InvalidPath::Port(_))
    ));
    assert!(matches!(
        parse_path("web..ns:80", None, CD),
        Err(InvalidPath::Label(_))
    ));
    assert!(matches!(
        parse_path("we_b.ns:80", None, CD),
        Err(InvalidPath::Label(_))
    ));
    assert!(matches!(
        parse_path("[::1:80", None, CD),
        Err(InvalidPath::Ipv6(_))
    ));
    assert!(matches!(
        parse_path("[zz]:80", None, CD),
        Err(InvalidPath::Ipv6(_))
    ));
    assert!(matches!(
        parse_path("[::1]x", None, CD),
        Err(InvalidPath::Ipv6(_))
    ));
    let long = format!("{}.ns:80", "a".repeat(300));
    assert_eq!(parse_path(&long, None, CD), Err(InvalidPath::TooLong));
    // Messages name what was wrong.
    let msg = parse_path("web:http", None, CD).unwrap_err().to_string();
    assert!(msg.contains("\"http\""), "{msg}");
}

#[test]
fn context_tokens() {
    assert_eq!(
        context_namespace(r#"{"ns":"emojivoto","pod":"x"}"#).as_deref(),
        Some("emojivoto")
    );
    assert_eq!(context_namespace(""), None);
    assert_eq!(context_namespace("not json"), None);
    assert_eq!(context_namespace(r#"{"ns":""}"#), None);
    let index = Index::new(CD, CD);
    assert_eq!(
        index.parse("web:80", r#"{"ns":"a"}"#),
        Ok(svc_target("a", "web", 80))
    );
}

// === resolution ===

#[test]
fn service_endpoints_with_labels_and_identity() {
    let index = index_with_web();
    let mut sub = index.subscribe(target("web.ns.svc.cluster.local:80"));
    let snap = sub.current();
    assert!(snap.exists);
    assert_eq!(addrs(&snap), ["198.18.0.1:8080", "198.18.0.2:8080"]);
    assert_eq!(snap.labels.get("namespace").map(|v| &**v), Some("ns"));
    assert_eq!(snap.labels.get("service").map(|v| &**v), Some("web"));
    assert_eq!(
        snap.profile.fully_qualified_name.as_deref(),
        Some("web.ns.svc.cluster.local")
    );

    let meshed = &snap.endpoints[0];
    assert_eq!(meshed.weight, DEFAULT_WEIGHT);
    let labels: Vec<(String, String)> = meshed
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        labels,
        [
            ("deployment".to_string(), "web".to_string()),
            ("pod".to_string(), "web-1".to_string()),
            ("serviceaccount".to_string(), "web-sa".to_string()),
        ]
    );
    assert!(meshed.h2);
    assert_eq!(
        meshed.identity,
        Some(Identity::for_service_account("ns", "web-sa", CD))
    );
    assert_eq!(
        meshed.identity.as_ref().unwrap().name.as_ref(),
        "web-sa.ns.serviceaccount.identity.mesh.cluster.local"
    );
    let unmeshed = &snap.endpoints[1];
    assert!(!unmeshed.h2);
    assert_eq!(unmeshed.identity, None);
    assert!(!unmeshed.opaque);
}

#[test]
fn endpoints_of_an_unknown_pod_carry_only_the_pod_name() {
    let index = Index::new(CD, CD);
    index.apply_service(web());
    index.apply_slice(slice(
        "ns",
        "s",
        "web",
        &[(None, 8080)],
        vec![ep("198.18.0.9", true, Some("p"))],
    ));
    let mut sub = index.subscribe(svc_target("ns", "web", 80));
    let snap = sub.current();
    assert_eq!(snap.endpoints[0].labels.len(), 1);
    assert_eq!(snap.endpoints[0].labels.get("pod").map(|v| &**v), Some("p"));
    assert_eq!(snap.endpoints[0].identity, None);
}

#[test]
fn not_ready_endpoints_are_excluded() {
    let index = Index::new(CD, CD);
    index.apply_service(web());
    index.apply_slice(slice(
        "ns",
        "s",
        "web",
        &[(None, 8080)],
        vec![ep("198.18.0.1", true, None), ep("198.18.0.2", false, None)],
    ));
    let mut sub = index.subscribe(svc_target("ns", "web", 80));
    assert_eq!(addrs(&sub.current()), ["198.18.0.1:8080"]);

    // Readiness flips: the stream follows.
    index.apply_slice(slice(
        "ns",
        "s",
        "web",
        &[(None, 8080)],
        vec![ep("198.18.0.1", false, None), ep("198.18.0.2", true, None)],
    ));
    assert!(sub.rx.has_changed().unwrap());
    assert_eq!(addrs(&sub.current()), ["198.18.0.2:8080"]);
}

#[test]
fn named_target_ports_resolve_per_slice() {
    let index = Index::new(CD, CD);
    index.apply_service(service(
        "ns",
        "api",
        &["198.19.0.2"],
        vec![
            port(Some("http"), 80, TargetPort::Name("web".into())),
            port(Some("admin"), 9000, TargetPort::Number(9990)),
        ],
    ));
    // Two slices: the two versions of the pods name a different container port "web".
    index.apply_slice(slice(
        "ns",
        "api-1",
        "api",
        &[(Some("http"), 8080), (Some("admin"), 9990)],
        vec![ep("198.18.0.1", true, None)],
    ));
    index.apply_slice(slice(
        "ns",
        "api-2",
        "api",
        &[(Some("http"), 8081), (Some("admin"), 9990)],
        vec![ep("198.18.0.2", true, None)],
    ));
    // A slice whose pods lack the named port serves no endpoints for it.
    index.apply_slice(slice(
        "ns",
        "api-3",
        "api",
        &[(Some("admin"), 9990)],
        vec![ep("198.18.0.3", true, None)],
    ));

    let mut http = index.subscribe(svc_target("ns", "api", 80));
    assert_eq!(
        addrs(&http.current()),
        ["198.18.0.1:8080", "198.18.0.2:8081"]
    );
    let mut admin = index.subscribe(svc_target("ns", "api", 9000));
    assert_eq!(
        addrs(&admin.current()),
        ["198.18.0.1:9990", "198.18.0.2:9990", "198.18.0.3:9990"]
    );
    // A port the service does not have: known, empty.
    let mut other = index.subscribe(svc_target("ns", "api", 81));
    let snap = other.current();
    assert!(snap.exists && snap.endpoints.is_empty());
}

#[test]
fn headless_service_and_hostname() {
    let index = Index::new(CD, CD);
    index.apply_service(service(
        "ns",
        "db",
        &[],
        vec![port(Some("pg"), 5432, TargetPort::Number(5432))],
    ));
    let mut e0 = ep("198.18.0.1", true, Some("db-0"));
    e0.hostname = Some("db-0".into());
    let mut e1 = ep("198.18.0.2", true, Some("db-1"));
    e1.hostname = Some("db-1".into());
    index.apply_slice(slice(
        "ns",
        "db-x",
        "db",
        &[(Some("pg"), 5432)],
        vec![e0, e1],
    ));

    let mut all = index.subscribe(target("db.ns.svc.cluster.local:5432"));
    assert_eq!(
        addrs(&all.current()),
        ["198.18.0.1:5432", "198.18.0.2:5432"]
    );
    let mut one = index.subscribe(target("db-1.db.ns.svc.cluster.local:5432"));
    assert_eq!(addrs(&one.current()), ["198.18.0.2:5432"]);
    let mut none = index.subscribe(target("db-9.db.ns.svc.cluster.local:5432"));
    let snap = none.current();
    assert!(snap.exists && snap.endpoints.is_empty());
}

#[test]
fn headless_service_without_ports_uses_the_asked_port() {
    let index = Index::new(CD, CD);
    index.apply_service(service("ns", "raw", &[], vec![]));
    index.apply_slice(slice(
        "ns",
        "raw-x",
        "raw",
        &[],
        vec![ep("198.18.0.1", true, None)],
    ));
    let mut sub = index.subscribe(svc_target("ns", "raw", 7000));
    assert_eq!(addrs(&sub.current()), ["198.18.0.1:7000"]);
}

#[test]
fn pod_ip() {
    let index = index_with_web();
    let mut sub = index.subscribe(target("198.18.0.1:9999"));
    let snap = sub.current();
    assert!(snap.exists);
    assert_eq!(addrs(&snap), ["198.18.0.1:9999"]);
    assert_eq!(snap.labels.len(), 1);
    assert_eq!(snap.labels.get("namespace").map(|v| &**v), Some("ns"));
    assert!(snap.endpoints[0].identity.is_some());
    assert_eq!(
        snap.endpoints[0].labels.get("pod").map(|v| &**v),
        Some("web-1")
    );
    assert_eq!(snap.profile.endpoint.as_deref(), Some(&*snap.endpoints[0]));
    assert_eq!(snap.profile.fully_qualified_name, None);

    // A pod that stops running is no longer found by IP.
    let mut p = pod("ns", "web-1", "198.18.0.1", true);
    p.running = false;
    index.apply_pod(p);
    let snap = sub.current();
    assert!(!snap.exists);

    // Opaque ports of a pod.
    let mut p = pod("ns", "web-1", "198.18.0.1", true);
    p.opaque_ports = PortSet::from_ports([3306]);
    index.apply_pod(p);
    let mut sub = index.subscribe(target("198.18.0.1:3306"));
    let snap = sub.current();
    assert!(snap.endpoints[0].opaque && snap.profile.opaque);
}

#[test]
fn cluster_ip() {
    let index = index_with_web();
    let mut sub = index.subscribe(target("198.19.0.1:80"));
    let snap = sub.current();
    assert_eq!(addrs(&snap), ["198.18.0.1:8080", "198.18.0.2:8080"]);
    assert_eq!(snap.labels.get("service").map(|v| &**v), Some("web"));

    // IPv6 cluster IPs too.
    let index = Index::new(CD, CD);
    index.apply_service(service(
        "ns",
        "v6",
        &["fd00::1"],
        vec![port(None, 80, TargetPort::Number(80))],
    ));
    index.apply_slice(slice(
        "ns",
        "v6-x",
        "v6",
        &[(None, 80)],
        vec![ep("fd00::10", true, None)],
    ));
    let mut sub = index.subscribe(target("[fd00::1]:80"));
    assert_eq!(addrs(&sub.current()), ["[fd00::10]:80"]);
}

#[test]
fn unknown_destinations() {
    let index = index_with_web();
    for path in [
        "nope.ns.svc.cluster.local:80",
        "web.other:80",
        "192.0.2.1:80",
        "example.com:443",
    ] {
        let mut sub = index.subscribe(target(path));
        let snap = sub.current();
        assert!(!snap.exists, "{path}");
        assert!(snap.endpoints.is_empty(), "{path}");
    }
    let mut sub = index.subscribe(Target::Unknown);
    assert!(!sub.current().exists);
}

#[test]
fn opaque_service_ports() {
    let index = Index::new(CD, CD);
    let mut svc = service(
        "ns",
        "mysql",
        &["198.19.0.3"],
        vec![port(None, 3306, TargetPort::Number(3306))],
    );
    svc.opaque_ports = PortSet::from_ports([3306]);
    index.apply_service(svc);
    index.apply_slice(slice(
        "ns",
        "m",
        "mysql",
        &[(None, 3306)],
        vec![ep("198.18.0.5", true, None)],
    ));
    let mut sub = index.subscribe(svc_target("ns", "mysql", 3306));
    let snap = sub.current();
    assert!(snap.endpoints[0].opaque);
    assert!(snap.profile.opaque);
}

// === live updates ===

#[test]
fn service_created_later_then_emptied() {
    let index = Index::new(CD, CD);
    let mut sub = index.subscribe(target("web.ns.svc.cluster.local:80"));
    assert!(!sub.current().exists);

    index.apply_slice(slice(
        "ns",
        "s",
        "web",
        &[(None, 8080)],
        vec![ep("198.18.0.1", true, None)],
    ));
    // A slice without its service: still unknown, and nothing was published.
    assert!(!sub.rx.has_changed().unwrap());

    index.apply_service(web());
    assert!(sub.rx.has_changed().unwrap());
    assert_eq!(addrs(&sub.current()), ["198.18.0.1:8080"]);

    index.delete_slice(&key("ns", "s"));
    let snap = sub.current();
    assert!(snap.exists && snap.endpoints.is_empty());

    index.delete_service(&key("ns", "web"));
    assert!(!sub.current().exists);
}

#[test]
fn ip_becomes_a_cluster_ip() {
    let index = Index::new(CD, CD);
    let mut sub = index.subscribe(target("198.19.0.1:80"));
    assert!(!sub.current().exists);
    index.apply_slice(slice(
        "ns",
        "s",
        "web",
        &[(None, 8080)],
        vec![ep("198.18.0.1", true, None)],
    ));
    index.apply_service(web());
    assert_eq!(addrs(&sub.current()), ["198.18.0.1:8080"]);
    // The service moves to another IP: the old address is unknown again.
    let mut moved = web();
    moved.cluster_ips = vec!["198.19.0.2".parse().unwrap()];
    index.apply_service(moved);
    assert!(!sub.current().exists);
}

#[test]
fn pod_changes_reach_service_streams() {
    let index = Index::new(CD, CD);
    index.apply_service(web());
    index.apply_slice(slice(
        "ns",
        "s",
        "web",
        &[(None, 8080)],
        vec![ep("198.18.0.1", true, Some("web-1"))],
    ));
    let mut sub = index.subscribe(svc_target("ns", "web", 80));
    assert_eq!(sub.current().endpoints[0].identity, None);
    index.apply_pod(pod("ns", "web-1", "198.18.0.1", true));
    assert!(sub.rx.has_changed().unwrap());
    assert!(sub.current().endpoints[0].identity.is_some());
    index.delete_pod(&key("ns", "web-1"));
    assert_eq!(sub.current().endpoints[0].identity, None);
    // An unrelated pod does not touch this stream.
    index.apply_pod(pod("ns", "other", "198.18.0.7", true));
    assert!(!sub.rx.has_changed().unwrap());
}

#[test]
fn equal_reapplies_publish_nothing() {
    let index = index_with_web();
    let mut sub = index.subscribe(svc_target("ns", "web", 80));
    let before = sub.current();
    index.apply_service(web());
    index.apply_pod(pod("ns", "web-1", "198.18.0.1", true));
    // A new slice version equal in substance (another order of reapply) changes nothing.
    index.reset(Resource::Services, ResetObjects::Services(vec![web()]));
    assert!(!sub.rx.has_changed().unwrap());
    assert!(Arc::ptr_eq(&before, &sub.current()));
}

#[test]
fn unchanged_endpoints_stay_shared() {
    let index = index_with_web();
    let mut sub = index.subscribe(svc_target("ns", "web", 80));
    let before = sub.current();
    index.apply_pod(pod("ns", "web-2", "198.18.0.2", true));
    let after = sub.current();
    assert!(Arc::ptr_eq(&before.endpoints[0], &after.endpoints[0]));
    assert!(!Arc::ptr_eq(&before.endpoints[1], &after.endpoints[1]));
    assert!(Arc::ptr_eq(&before.labels, &after.labels));
}

#[test]
fn reset_removes_objects_missing_from_a_relist() {
    let index = index_with_web();
    index.apply_service(service(
        "ns",
        "gone",
        &["198.19.0.9"],
        vec![port(None, 80, TargetPort::Number(80))],
    ));
    let mut gone = index.subscribe(svc_target("ns", "gone", 80));
    let mut web_sub = index.subscribe(svc_target("ns", "web", 80));
    let mut pod_sub = index.subscribe(target("198.18.0.2:80"));
    assert!(gone.current().exists);
    assert!(pod_sub.current().exists);
    web_sub.current();

    index.reset(Resource::Services, ResetObjects::Services(vec![web()]));
    assert!(!gone.current().exists);
    assert!(!web_sub.rx.has_changed().unwrap());

    index.reset(
        Resource::EndpointSlices,
        ResetObjects::EndpointSlices(vec![slice(
            "ns",
            "web-new",
            "web",
            &[(None, 8080)],
            vec![ep("198.18.0.3", true, Some("web-3"))],
        )]),
    );
    assert_eq!(addrs(&web_sub.current()), ["198.18.0.3:8080"]);

    index.reset(
        Resource::Pods,
        ResetObjects::Pods(vec![pod("ns", "web-3", "198.18.0.3", true)]),
    );
    assert!(!pod_sub.current().exists);
    assert!(web_sub.current().endpoints[0].identity.is_some());
    let stats = index.stats();
    assert_eq!(
        (stats.services, stats.endpoint_slices, stats.pods),
        (1, 1, 1)
    );
}

#[test]
fn port_rename() {
    let index = Index::new(CD, CD);
    index.apply_service(service(
        "ns",
        "api",
        &[],
        vec![port(Some("http"), 80, TargetPort::Name("web".into()))],
    ));
    index.apply_slice(slice(
        "ns",
        "a",
        "api",
        &[(Some("http"), 8080)],
        vec![ep("198.18.0.1", true, None)],
    ));
    let mut sub = index.subscribe(svc_target("ns", "api", 80));
    assert_eq!(addrs(&sub.current()), ["198.18.0.1:8080"]);

    // The container port behind the name moves: the slice follows.
    index.apply_slice(slice(
        "ns",
        "a",
        "api",
        &[(Some("http"), 9090)],
        vec![ep("198.18.0.1", true, None)],
    ));
    assert_eq!(addrs(&sub.current()), ["198.18.0.1:9090"]);

    // The service port is renamed before the slice catches up. One port on each side
    // is unambiguous, so the endpoints stay while the slice catches up.
    index.apply_service(service(
        "ns",
        "api",
        &[],
        vec![port(Some("web"), 80, TargetPort::Name("web".into()))],
    ));
    assert_eq!(addrs(&sub.current()), ["198.18.0.1:9090"]);
    index.apply_slice(slice(
        "ns",
        "a",
        "api",
        &[(Some("web"), 9090)],
        vec![ep("198.18.0.1", true, None)],
    ));
    assert_eq!(addrs(&sub.current()), ["198.18.0.1:9090"]);

    // With two service ports, a slice port named for neither matches nothing.
    index.apply_service(service(
        "ns",
        "api",
        &[],
        vec![
            port(Some("admin"), 80, TargetPort::Name("admin".into())),
            port(Some("other"), 90, TargetPort::Name("other".into())),
        ],
    ));
    assert!(sub.current().endpoints.is_empty());
    index.apply_service(service(
        "ns",
        "api",
        &[],
        vec![port(Some("web"), 80, TargetPort::Name("web".into()))],
    ));
    assert_eq!(addrs(&sub.current()), ["198.18.0.1:9090"]);

    // The service port number changes: the old port is known but empty.
    index.apply_service(service(
        "ns",
        "api",
        &[],
        vec![port(Some("web"), 81, TargetPort::Name("web".into()))],
    ));
    let snap = sub.current();
    assert!(snap.exists && snap.endpoints.is_empty());
}

#[test]
fn slice_moving_between_services() {
    let index = Index::new(CD, CD);
    index.apply_service(web());
    index.apply_service(service(
        "ns",
        "api",
        &[],
        vec![port(None, 80, TargetPort::Number(8080))],
    ));
    index.apply_slice(slice(
        "ns",
        "s",
        "web",
        &[(None, 8080)],
        vec![ep("198.18.0.1", true, Some("p"))],
    ));
    let mut web_sub = index.subscribe(svc_target("ns", "web", 80));
    let mut api_sub = index.subscribe(svc_target("ns", "api", 80));
    assert_eq!(addrs(&web_sub.current()).len(), 1);
    index.apply_slice(slice(
        "ns",
        "s",
        "api",
        &[(None, 8080)],
        vec![ep("198.18.0.1", true, Some("p"))],
    ));
    assert!(web_sub.current().endpoints.is_empty());
    assert_eq!(addrs(&api_sub.current()).len(), 1);
    // The pod's references moved too: a pod change reaches api, not web.
    index.apply_pod(pod("ns", "p", "198.18.0.1", true));
    assert!(!web_sub.rx.has_changed().unwrap());
    assert!(api_sub.current().endpoints[0].identity.is_some());
}

#[test]
fn duplicate_addresses_across_slices_are_sent_once() {
    let index = Index::new(CD, CD);
    index.apply_service(web());
    index.apply_slice(slice(
        "ns",
        "a",
        "web",
        &[(None, 8080)],
        vec![ep("198.18.0.1", true, None)],
    ));
    index.apply_slice(slice(
        "ns",
        "b",
        "web",
        &[(None, 8080)],
        vec![ep("198.18.0.1", true, None)],
    ));
    let mut sub = index.subscribe(svc_target("ns", "web", 80));
    assert_eq!(addrs(&sub.current()), ["198.18.0.1:8080"]);
}

#[tokio::test]
async fn subscriptions_share_and_clean_up() {
    let index = index_with_web();
    let mut a = index.subscribe(svc_target("ns", "web", 80));
    let mut b = index.subscribe(svc_target("ns", "web", 80));
    let c = index.subscribe(target("198.19.0.1:80"));
    assert_eq!(index.stats().queries, 2);
    assert!(Arc::ptr_eq(&a.next().await, &b.next().await));
    drop(a);
    assert_eq!(index.stats().queries, 2);
    drop(b);
    drop(c);
    assert_eq!(index.stats().queries, 0);
    let state = index.shared.lock();
    assert!(state.service_queries.is_empty());
    assert!(state.ip_queries.is_empty());
}

#[tokio::test(start_paused = true)]
async fn next_waits_for_a_change_and_coalesces() {
    let index = index_with_web();
    let mut sub = index.subscribe(svc_target("ns", "web", 80));
    assert_eq!(sub.next().await.endpoints.len(), 2);
    let pending = tokio::time::timeout(std::time::Duration::from_secs(1), sub.next()).await;
    assert!(pending.is_err(), "no change yet");

    index.delete_pod(&key("ns", "web-1"));
    index.delete_slice(&key("ns", "web-abc"));
    let snap = sub.next().await;
    assert!(snap.exists && snap.endpoints.is_empty());
}

#[tokio::test(start_paused = true)]
async fn unknown_targets_stay_open() {
    let index = Index::new(CD, CD);
    let mut sub = index.subscribe(Target::Unknown);
    assert!(!sub.next().await.exists);
    let pending = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next()).await;
    assert!(pending.is_err());
}

#[test]
fn readiness_needs_every_expected_resource() {
    let index = Index::new(CD, CD);
    assert!(!index.is_ready());
    index.synced(Resource::Services);
    assert!(!index.is_ready(), "nothing expected yet");
    index.ready_once_synced(&[Resource::Services, Resource::Pods]);
    assert!(!index.is_ready());
    index.synced(Resource::Pods);
    assert!(index.is_ready());
    index.record_watch_restart(Resource::Pods);
    index.record_watch_restart(Resource::Pods);
    assert_eq!(index.stats().watch_restarts(Resource::Pods), 2);
    assert_eq!(index.stats().watch_restarts(Resource::Services), 0);
}

#[tokio::test(start_paused = true)]
async fn synced_once_waits_for_its_kind_alone() {
    let index = Index::new(CD, CD);
    index.ready_once_synced(&[Resource::Services]);
    index.synced(Resource::Services);
    assert!(index.is_ready(), "profiles are not needed for readiness");
    let waiting = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        index.synced_once(Resource::ServiceProfiles),
    )
    .await;
    assert!(waiting.is_err(), "profiles have not synced yet");
    let waiter = tokio::spawn({
        let index = index.clone();
        async move { index.synced_once(Resource::ServiceProfiles).await }
    });
    index.synced(Resource::ServiceProfiles);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("woken by the sync")
        .expect("the waiter ran");
    // Once synced, at once.
    index.synced_once(Resource::ServiceProfiles).await;
}

// === diff ===

/// What a client holds after applying the messages it received.
#[derive(Debug, Default)]
struct View {
    no_endpoints: Option<bool>,
    endpoints: BTreeMap<SocketAddr, (Labels, Arc<Endpoint>)>,
}

impl View {
    fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Add { labels, endpoints } => {
                    assert!(!endpoints.is_empty(), "empty Add");
                    self.no_endpoints = None;
                    for ep in endpoints {
                        self.endpoints.insert(ep.addr, (labels.clone(), ep.clone()));
                    }
                }
                Change::Remove(addrs) => {
                    assert!(!addrs.is_empty(), "empty Remove");
                    for a in addrs {
                        assert!(self.endpoints.remove(a).is_some(), "removed unknown {a}");
                    }
                }
                Change::NoEndpoints { exists } => {
                    self.no_endpoints = Some(*exists);
                    self.endpoints.clear();
                }
            }
        }
    }

    fn matches(&self, s: &Snapshot) -> bool {
        let same_endpoints = self.endpoints.len() == s.endpoints.len()
            && s.endpoints.iter().all(|e| {
                self.endpoints
                    .get(&e.addr)
                    .is_some_and(|(l, v)| **l == *s.labels && **v == **e)
            });
        let same_state = if s.endpoints.is_empty() {
            self.no_endpoints == Some(s.exists)
        } else {
            true
        };
        same_endpoints && same_state
    }
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    let endpoint = (0u8..6, 0u8..3, any::<bool>()).prop_map(|(host, label, h2)| Endpoint {
        addr: SocketAddr::new([10, 0, 0, host].into(), 80),
        weight: DEFAULT_WEIGHT,
        labels: [(
            Arc::<str>::from("pod"),
            Arc::<str>::from(format!("p{label}")),
        )]
        .into(),
        identity: None,
        h2,
        opaque: false,
    });
    (
        any::<bool>(),
        0u8..2,
        proptest::collection::vec(endpoint, 0..6),
    )
        .prop_map(|(exists, svc, eps)| {
            let mut endpoints: Vec<Arc<Endpoint>> = eps.into_iter().map(Arc::new).collect();
            endpoints.sort_by_key(|e| e.addr);
            endpoints.dedup_by_key(|e| e.addr);
            // Only a known destination has endpoints.
            let exists = exists || !endpoints.is_empty();
            Snapshot {
                exists,
                labels: Arc::new(
                    [(
                        Arc::<str>::from("service"),
                        Arc::<str>::from(format!("s{svc}")),
                    )]
                    .into(),
                ),
                endpoints,
                profile: ProfileInfo::default(),
            }
        })
}

proptest! {
    /// Whatever sequence of snapshots a stream sees (a slow stream sees a subsequence),
    /// the messages it sends turn the client's view into the newest snapshot.
    #[test]
    fn diffs_turn_each_view_into_the_next(snaps in proptest::collection::vec(arb_snapshot(), 1..8)) {
        let mut view = View::default();
        let mut prev: Option<&Snapshot> = None;
        for next in &snaps {
            let changes = diff(prev, next);
            if prev.is_none() {
                prop_assert_eq!(changes.len(), 1, "the first message is the full state");
            }
            if prev == Some(next) {
                prop_assert!(changes.is_empty(), "no change, no message");
            }
            view.apply(&changes);
            prop_assert!(view.matches(next), "view {:?} after {:?} is not {:?}", view, changes, next);
            prev = Some(next);
        }
    }
}

#[test]
fn reset_many_publishes_once() {
    let index = index_with_web();
    let mut sub = index.subscribe(svc_target("ns", "web", 80));
    sub.current();
    index.reset_many([
        ResetObjects::Pods(vec![pod("ns", "web-3", "198.18.0.3", true)]),
        ResetObjects::EndpointSlices(vec![slice(
            "ns",
            "web-new",
            "web",
            &[(None, 8080)],
            vec![ep("198.18.0.3", true, Some("web-3"))],
        )]),
        ResetObjects::Services(vec![web()]),
    ]);
    // One new snapshot, straight to the final state (pods first, alone, would have
    // published endpoints stripped of their pods' identities).
    assert!(sub.rx.has_changed().unwrap());
    let snap = sub.current();
    assert_eq!(addrs(&snap), ["198.18.0.3:8080"]);
    assert!(snap.endpoints[0].identity.is_some());
    let publishes = index.shared.lock().queries[sub.target()].publishes;
    assert_eq!(publishes, 1);
}

#[test]
fn a_change_recomputes_only_the_targets_that_depend_on_it() {
    let index = Index::new(CD, CD);
    let mut subs = Vec::new();
    for i in 0..50u8 {
        let name = format!("svc-{i}");
        let pod_name = format!("pod-{i}");
        let ip = format!("198.18.1.{i}");
        let mut svc = web();
        svc.key = key("ns", &name);
        svc.cluster_ips = vec![format!("198.19.1.{i}").parse().unwrap()];
        index.apply_service(svc);
        index.apply_slice(slice(
            "ns",
            &name,
            &name,
            &[(None, 8080)],
            vec![ep(&ip, true, Some(&pod_name))],
        ));
        index.apply_pod(pod("ns", &pod_name, &ip, false));
        subs.push(index.subscribe(svc_target("ns", &name, 80)));
        subs.push(index.subscribe(target(&format!("198.19.1.{i}:80"))));
        subs.push(index.subscribe(target(&format!("{ip}:8080"))));
    }
    assert_eq!(index.stats().queries, 150);

    // One pod turns meshed: its service (by name and by cluster IP) and its own
    // address change; nothing else is even recomputed into a new snapshot.
    index.apply_pod(pod("ns", "pod-7", "198.18.1.7", true));
    let state = index.shared.lock();
    let changed: Vec<&Target> = state
        .queries
        .iter()
        .filter(|(_, q)| q.publishes > 0)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(changed.len(), 3, "{changed:?}");
    let recomputed = state.queries.values().filter(|q| q.recomputes > 0).count();
    assert_eq!(recomputed, 3);
    assert!(changed.contains(&&svc_target("ns", "svc-7", 80)));
    assert!(changed.contains(&&Target::Addr(sa("198.19.1.7:80"))));
    assert!(changed.contains(&&Target::Addr(sa("198.18.1.7:8080"))));
}

// === profiles ===

fn profile(ns: &str, name: &str, route: &str) -> ServiceProfile {
    let yaml = format!(
        "metadata: {{name: {name}}}\nspec:\n  routes: [{{name: {route}, condition: {{method: GET}}}}]\n"
    );
    let valid = crate::profile::parse_yaml(&yaml, None).unwrap();
    ServiceProfile {
        key: key(ns, name),
        spec: ProfileSpec(Arc::new(valid)),
    }
}

fn routes(s: &Snapshot) -> Vec<String> {
    s.profile
        .spec
        .iter()
        .flat_map(|p| p.0.routes.iter().map(|r| r.name.clone()))
        .collect()
}

#[test]
fn profiles_follow_their_service_and_keep_the_last_valid_one() {
    let index = index_with_web();
    let mut by_name = index.subscribe(target("web.ns.svc.cluster.local:80"));
    assert!(by_name.current().profile.spec.is_none());

    index.apply_profile(profile("ns", "web.ns.svc.cluster.local", "a"));
    assert_eq!(routes(&by_name.current()), ["a"]);
    // A profile in another namespace, or for another cluster domain, is not web's.
    index.apply_profile(profile("other", "web.ns.svc.cluster.local", "x"));
    index.apply_profile(profile("ns", "web.ns.svc.example.org", "x"));
    assert_eq!(routes(&by_name.current()), ["a"]);
    assert_eq!(index.stats().service_profiles, 1);

    // A re-list where the profile is now invalid keeps the last valid one in force;
    // one where it is gone removes it.
    index.reset(
        Resource::ServiceProfiles,
        ResetObjects::ServiceProfiles(Vec::new(), vec![key("ns", "web.ns.svc.cluster.local")]),
    );
    assert_eq!(routes(&by_name.current()), ["a"]);
    index.apply_profile(profile("ns", "web.ns.svc.cluster.local", "b"));
    assert_eq!(routes(&by_name.current()), ["b"]);
    index.reset(
        Resource::ServiceProfiles,
        ResetObjects::ServiceProfiles(Vec::new(), Vec::new()),
    );
    assert!(by_name.current().profile.spec.is_none());

    index.apply_profile(profile("ns", "web.ns.svc.cluster.local", "c"));
    index.delete_profile(&key("ns", "web.ns.svc.cluster.local"));
    assert!(by_name.current().profile.spec.is_none());
    // A pod address has no profile, whatever its service has.
    index.apply_profile(profile("ns", "web.ns.svc.cluster.local", "c"));
    let pod = index.subscribe(target("198.18.0.1:8080"));
    assert!(pod.rx.borrow().profile.spec.is_none());
}
