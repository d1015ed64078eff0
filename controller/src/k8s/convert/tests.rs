use super::*;
use k8s_openapi::{
    api::core::v1::{ObjectReference, PodIP, PodSpec, PodStatus, ServiceSpec},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use std::collections::BTreeMap;

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn map(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn key(ns: &str, name: &str) -> ObjKey {
    ObjKey::new(ns, name)
}

// === parse_port_list ===

#[test]
fn port_list_single_ports_and_ranges() {
    assert_eq!(parse_port_list("3306"), Ok(vec![3306]));
    assert_eq!(
        parse_port_list("3306,5000-5002"),
        Ok(vec![3306, 5000, 5001, 5002])
    );
    assert_eq!(parse_port_list("1-1"), Ok(vec![1]));
    assert_eq!(parse_port_list("65535"), Ok(vec![65535]));
}

#[test]
fn port_list_allows_spaces_and_empty_entries() {
    assert_eq!(
        parse_port_list(" 5000 - 5001 , 3306 ,, "),
        Ok(vec![3306, 5000, 5001])
    );
    assert_eq!(parse_port_list(""), Ok(vec![]));
    assert_eq!(parse_port_list(" , "), Ok(vec![]));
}

#[test]
fn port_list_sorts_and_dedups() {
    assert_eq!(
        parse_port_list("8080,80,79-81,80"),
        Ok(vec![79, 80, 81, 8080])
    );
}

#[test]
fn port_list_rejects_invalid_entries() {
    for bad in [
        "0",
        "65536",
        "-1",
        "http",
        "5002-5000",
        "0-10",
        "10-",
        "-10",
        "1-2-3",
        "80,abc",
        "80;81",
        "3306 5432",
    ] {
        let err = parse_port_list(bad).expect_err(bad);
        assert!(
            err.to_string().starts_with("invalid port or port range"),
            "{bad}: {err}"
        );
    }
    let err = parse_port_list("80, 9-8").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid port or port range \"9-8\": the range starts above its end"
    );
}

#[test]
fn opaque_annotation_skips_invalid_entries() {
    let mut m = meta("ns", "x");
    m.annotations = map(&[(OPAQUE_PORTS_ANNOTATION, "bad, 4000-4001, 0, 3306,9-8")]);
    assert_eq!(
        opaque_ports(&m, &key("ns", "x")),
        PortSet::from_ports([3306, 4000, 4001])
    );
    // Other annotations are not read.
    m.annotations = map(&[("config.mesh.rs/skip-inbound-ports", "22")]);
    assert_eq!(opaque_ports(&m, &key("ns", "x")), PortSet::default());
}

// === Service ===

fn svc(spec: ServiceSpec) -> core::Service {
    core::Service {
        metadata: meta("emojivoto", "web"),
        spec: Some(spec),
        ..Default::default()
    }
}

fn svc_port(name: Option<&str>, port: i32, target: Option<IntOrString>) -> core::ServicePort {
    core::ServicePort {
        name: name.map(Into::into),
        port,
        target_port: target,
        ..Default::default()
    }
}

#[test]
fn service_ports_and_target_ports() {
    let s = svc(ServiceSpec {
        cluster_ip: Some("198.19.0.10".into()),
        ports: Some(vec![
            svc_port(Some("http"), 80, Some(IntOrString::Int(8080))),
            svc_port(
                Some("grpc"),
                8443,
                Some(IntOrString::String("grpc-port".into())),
            ),
            svc_port(Some("admin"), 9990, None),
            svc_port(Some(""), 7000, Some(IntOrString::Int(0))),
            svc_port(None, 7001, Some(IntOrString::String("".into()))),
        ]),
        ..Default::default()
    });
    let got = service(&s).expect("converts");
    assert_eq!(got.key, key("emojivoto", "web"));
    assert_eq!(got.cluster_ips, vec![ip("198.19.0.10")]);
    assert_eq!(
        got.ports,
        vec![
            ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: TargetPort::Number(8080)
            },
            ServicePort {
                name: Some("grpc".into()),
                port: 8443,
                target_port: TargetPort::Name("grpc-port".into())
            },
            ServicePort {
                name: Some("admin".into()),
                port: 9990,
                target_port: TargetPort::Number(9990)
            },
            ServicePort {
                name: None,
                port: 7000,
                target_port: TargetPort::Number(7000)
            },
            ServicePort {
                name: None,
                port: 7001,
                target_port: TargetPort::Number(7001)
            },
        ]
    );
    assert!(got.opaque_ports.is_empty());
}

#[test]
fn service_skips_non_tcp_and_out_of_range_ports() {
    let udp = core::ServicePort {
        protocol: Some("UDP".into()),
        ..svc_port(Some("dns"), 53, None)
    };
    let tcp = core::ServicePort {
        protocol: Some("TCP".into()),
        ..svc_port(Some("dns-tcp"), 53, None)
    };
    let s = svc(ServiceSpec {
        ports: Some(vec![
            udp,
            tcp,
            svc_port(Some("big"), 70000, None),
            svc_port(Some("zero"), 0, None),
            svc_port(Some("neg-target"), 81, Some(IntOrString::Int(-1))),
            svc_port(Some("big-target"), 82, Some(IntOrString::Int(65536))),
        ]),
        ..Default::default()
    });
    let got = service(&s).expect("converts");
    assert_eq!(
        got.ports,
        vec![ServicePort {
            name: Some("dns-tcp".into()),
            port: 53,
            target_port: TargetPort::Number(53)
        }]
    );
}

#[test]
fn service_cluster_ips() {
    let dual = svc(ServiceSpec {
        cluster_ip: Some("198.19.0.10".into()),
        cluster_ips: Some(vec!["198.19.0.10".into(), "fd00::10".into()]),
        ..Default::default()
    });
    assert_eq!(
        service(&dual).unwrap().cluster_ips,
        vec![ip("198.19.0.10"), ip("fd00::10")]
    );

    // Only the older field.
    let single = svc(ServiceSpec {
        cluster_ip: Some("198.19.0.11".into()),
        cluster_ips: Some(vec![]),
        ..Default::default()
    });
    assert_eq!(
        service(&single).unwrap().cluster_ips,
        vec![ip("198.19.0.11")]
    );

    // Invalid IPs are skipped, the valid ones kept.
    let bad = svc(ServiceSpec {
        cluster_ips: Some(vec!["198.19.0.300".into(), "198.19.0.12".into()]),
        ..Default::default()
    });
    assert_eq!(service(&bad).unwrap().cluster_ips, vec![ip("198.19.0.12")]);
}

#[test]
fn headless_service_has_no_cluster_ips() {
    for spec in [
        ServiceSpec {
            cluster_ip: Some("None".into()),
            cluster_ips: Some(vec!["None".into()]),
            ..Default::default()
        },
        ServiceSpec {
            cluster_ip: Some("None".into()),
            ..Default::default()
        },
        ServiceSpec {
            cluster_ip: Some("".into()),
            ..Default::default()
        },
        ServiceSpec::default(),
    ] {
        let got = service(&svc(spec.clone())).expect("converts");
        assert!(got.cluster_ips.is_empty(), "{spec:?}");
    }
}

#[test]
fn external_name_service_is_absent() {
    let s = svc(ServiceSpec {
        type_: Some("ExternalName".into()),
        external_name: Some("db.example.com".into()),
        ..Default::default()
    });
    assert_eq!(service(&s), None);
    // Other types are services like any other.
    for ty in ["ClusterIP", "NodePort", "LoadBalancer"] {
        let s = svc(ServiceSpec {
            type_: Some(ty.into()),
            ..Default::default()
        });
        assert!(service(&s).is_some(), "{ty}");
    }
}

#[test]
fn service_opaque_ports_and_defaults() {
    let mut s = core::Service {
        metadata: meta("ns", "db"),
        spec: None,
        status: None,
    };
    s.metadata.annotations = map(&[(OPAQUE_PORTS_ANNOTATION, "3306,5000-5001,nope")]);
    let got = service(&s).expect("a service without spec still exists");
    assert_eq!(
        got,
        Service {
            key: key("ns", "db"),
            cluster_ips: vec![],
            ports: vec![],
            opaque_ports: PortSet::from_ports([3306, 5000, 5001]),
        }
    );
}

#[test]
fn objects_without_namespace_or_name_are_skipped() {
    let mut s = svc(ServiceSpec::default());
    s.metadata.namespace = None;
    assert_eq!(service(&s), None);
    let mut s = svc(ServiceSpec::default());
    s.metadata.name = Some(String::new());
    assert_eq!(service(&s), None);
    assert_eq!(service(&core::Service::default()), None);
}

// === EndpointSlice ===

fn slice(
    address_type: &str,
    ports: Vec<discovery::EndpointPort>,
    endpoints: Vec<discovery::Endpoint>,
) -> discovery::EndpointSlice {
    let mut m = meta("emojivoto", "web-abcde");
    m.labels = map(&[(SERVICE_NAME_LABEL, "web")]);
    discovery::EndpointSlice {
        metadata: m,
        address_type: address_type.into(),
        ports: Some(ports),
        endpoints: Some(endpoints),
    }
}

fn eport(name: Option<&str>, port: Option<i32>) -> discovery::EndpointPort {
    discovery::EndpointPort {
        name: name.map(Into::into),
        port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn endpoint(addresses: &[&str], ready: Option<bool>) -> discovery::Endpoint {
    discovery::Endpoint {
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        conditions: Some(discovery::EndpointConditions {
            ready,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_ref(namespace: Option<&str>, name: &str) -> Option<ObjectReference> {
    Some(ObjectReference {
        kind: Some("Pod".into()),
        namespace: namespace.map(Into::into),
        name: Some(name.into()),
        ..Default::default()
    })
}

#[test]
fn slice_ports_and_endpoints() {
    let mut e1 = endpoint(&["198.18.0.1"], Some(true));
    e1.hostname = Some("web-0".into());
    e1.target_ref = pod_ref(Some("emojivoto"), "web-0");
    let mut e2 = endpoint(&["198.18.0.2"], Some(false));
    e2.target_ref = pod_ref(None, "web-1");
    let e3 = discovery::Endpoint {
        addresses: vec!["198.18.0.3".into()],
        conditions: None,
        ..Default::default()
    };
    let s = slice(
        "IPv4",
        vec![eport(Some("http"), Some(8080)), eport(Some(""), Some(9090))],
        vec![e1, e2, e3, endpoint(&["198.18.0.4"], None)],
    );
    let got = endpoint_slice(&s).expect("converts");
    assert_eq!(got.key, key("emojivoto", "web-abcde"));
    assert_eq!(&*got.service, "web");
    assert_eq!(
        got.ports,
        vec![
            SlicePort {
                name: Some("http".into()),
                port: 8080
            },
            SlicePort {
                name: None,
                port: 9090
            },
        ]
    );
    assert_eq!(
        got.endpoints,
        vec![
            SliceEndpoint {
                addresses: vec![ip("198.18.0.1")],
                ready: true,
                hostname: Some("web-0".into()),
                pod: Some("web-0".into()),
            },
            SliceEndpoint {
                addresses: vec![ip("198.18.0.2")],
                ready: false,
                hostname: None,
                pod: Some("web-1".into()),
            },
            // Absent conditions and an absent `ready` both mean ready.
            SliceEndpoint {
                addresses: vec![ip("198.18.0.3")],
                ready: true,
                hostname: None,
                pod: None,
            },
            SliceEndpoint {
                addresses: vec![ip("198.18.0.4")],
                ready: true,
                hostname: None,
                pod: None,
            },
        ]
    );
}

#[test]
fn slice_ipv6() {
    let s = slice(
        "IPv6",
        vec![eport(None, Some(80))],
        vec![endpoint(&["fd00::1"], Some(true))],
    );
    let got = endpoint_slice(&s).expect("converts");
    assert_eq!(got.endpoints[0].addresses, vec![ip("fd00::1")]);
}

#[test]
fn slice_skips_bad_ports_and_addresses() {
    let udp = discovery::EndpointPort {
        protocol: Some("UDP".into()),
        ..eport(Some("dns"), Some(53))
    };
    let no_protocol = discovery::EndpointPort {
        protocol: None,
        ..eport(Some("web"), Some(80))
    };
    let s = slice(
        "IPv4",
        vec![
            eport(Some("any"), None),
            eport(Some("big"), Some(70000)),
            eport(Some("zero"), Some(0)),
            udp,
            no_protocol,
        ],
        vec![
            endpoint(&["not-an-ip"], Some(true)),
            endpoint(&["198.18.0.300", "198.18.0.5"], Some(true)),
            endpoint(&[], Some(true)),
        ],
    );
    let got = endpoint_slice(&s).expect("converts");
    assert_eq!(
        got.ports,
        vec![SlicePort {
            name: Some("web".into()),
            port: 80
        }]
    );
    assert_eq!(got.endpoints.len(), 1);
    assert_eq!(got.endpoints[0].addresses, vec![ip("198.18.0.5")]);
}

#[test]
fn slice_pod_ref_must_be_a_pod_in_the_same_namespace() {
    let mut other_ns = endpoint(&["198.18.0.1"], Some(true));
    other_ns.target_ref = pod_ref(Some("elsewhere"), "web-0");
    let mut not_pod = endpoint(&["198.18.0.2"], Some(true));
    not_pod.target_ref = Some(ObjectReference {
        kind: Some("ExternalWorkload".into()),
        name: Some("vm-1".into()),
        ..Default::default()
    });
    let mut nameless = endpoint(&["198.18.0.3"], Some(true));
    nameless.target_ref = Some(ObjectReference {
        kind: Some("Pod".into()),
        ..Default::default()
    });
    let s = slice("IPv4", vec![], vec![other_ns, not_pod, nameless]);
    let got = endpoint_slice(&s).expect("converts");
    assert_eq!(got.endpoints.len(), 3);
    assert!(got.endpoints.iter().all(|e| e.pod.is_none()), "{got:?}");
}

#[test]
fn slices_without_service_or_ips_are_absent() {
    let mut s = slice("IPv4", vec![], vec![]);
    s.metadata.labels = None;
    assert_eq!(endpoint_slice(&s), None);
    s.metadata.labels = map(&[(SERVICE_NAME_LABEL, "")]);
    assert_eq!(endpoint_slice(&s), None);
    s.metadata.labels = map(&[("app", "web")]);
    assert_eq!(endpoint_slice(&s), None);

    let fqdn = slice(
        "FQDN",
        vec![eport(None, Some(80))],
        vec![endpoint(&["db.example.com"], None)],
    );
    assert_eq!(endpoint_slice(&fqdn), None);
}

#[test]
fn empty_slice_converts() {
    let mut s = slice("IPv4", vec![], vec![]);
    s.ports = None;
    s.endpoints = None;
    let got = endpoint_slice(&s).expect("an empty slice is a slice");
    assert!(got.ports.is_empty() && got.endpoints.is_empty());
}

// === Pod ===

const CP_NS: &str = "mesh-system";

fn pod_obj(labels: &[(&str, &str)], owner: Option<(&str, &str)>) -> core::Pod {
    let mut m = meta("emojivoto", "web-7d4b9c6f5-x2x9z");
    m.labels = map(labels);
    m.owner_references = owner.map(|(kind, name)| {
        vec![OwnerReference {
            kind: kind.into(),
            name: name.into(),
            controller: Some(true),
            ..Default::default()
        }]
    });
    core::Pod {
        metadata: m,
        spec: Some(PodSpec {
            service_account_name: Some("web".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("198.18.0.7".into()),
            pod_ips: Some(vec![
                PodIP {
                    ip: "198.18.0.7".into(),
                },
                PodIP {
                    ip: "fd00::7".into(),
                },
            ]),
            ..Default::default()
        }),
    }
}

#[test]
fn pod_fields() {
    let p = pod_obj(
        &[
            (POD_TEMPLATE_HASH_LABEL, "7d4b9c6f5"),
            (CONTROL_PLANE_NS_LABEL, CP_NS),
        ],
        Some(("ReplicaSet", "web-7d4b9c6f5")),
    );
    let mut p = p;
    p.metadata.annotations = map(&[(OPAQUE_PORTS_ANNOTATION, "6379")]);
    assert_eq!(
        pod(&p, CP_NS),
        Some(Pod {
            key: key("emojivoto", "web-7d4b9c6f5-x2x9z"),
            ips: vec![ip("198.18.0.7"), ip("fd00::7")],
            running: true,
            service_account: "web".into(),
            owner: Some(("deployment".into(), "web".into())),
            meshed: true,
            opaque_ports: PortSet::from_ports([6379]),
            admin: None,
            tap: None,
        })
    );
}

#[test]
fn pod_meshed_only_by_this_control_plane() {
    let other = pod_obj(&[(CONTROL_PLANE_NS_LABEL, "other-mesh")], None);
    assert!(!pod(&other, CP_NS).unwrap().meshed);
    let none = pod_obj(&[], None);
    assert!(!pod(&none, CP_NS).unwrap().meshed);
}

#[test]
fn pod_owner_kinds() {
    let owner_of = |labels: &[(&str, &str)], kind: &str, name: &str| {
        pod(&pod_obj(labels, Some((kind, name))), CP_NS)
            .unwrap()
            .owner
            .map(|(k, n)| (k.to_string(), n.to_string()))
    };
    let pair = |k: &str, n: &str| Some((k.to_string(), n.to_string()));
    let hash = [(POD_TEMPLATE_HASH_LABEL, "abc12")];

    assert_eq!(
        owner_of(&hash, "ReplicaSet", "api-v2-abc12"),
        pair("deployment", "api-v2")
    );
    // A ReplicaSet not named after the pod's template hash was not made by a Deployment.
    assert_eq!(
        owner_of(&hash, "ReplicaSet", "api-v2"),
        pair("replicaset", "api-v2")
    );
    assert_eq!(
        owner_of(&hash, "ReplicaSet", "api-v2xabc12"),
        pair("replicaset", "api-v2xabc12")
    );
    assert_eq!(
        owner_of(&[], "ReplicaSet", "api-abc12"),
        pair("replicaset", "api-abc12")
    );
    assert_eq!(
        owner_of(&hash, "ReplicaSet", "-abc12"),
        pair("replicaset", "-abc12")
    );
    assert_eq!(
        owner_of(&[], "StatefulSet", "db"),
        pair("statefulset", "db")
    );
    assert_eq!(
        owner_of(&[], "DaemonSet", "agent"),
        pair("daemonset", "agent")
    );
    assert_eq!(
        owner_of(&[], "Job", "backup-28211"),
        pair("job", "backup-28211")
    );
    assert_eq!(
        owner_of(&[], "ReplicationController", "legacy"),
        pair("replicationcontroller", "legacy")
    );
    assert_eq!(owner_of(&[], "", "x"), None);
}

#[test]
fn pod_owner_is_the_controller_reference() {
    let mut p = pod_obj(&[], None);
    let reference = |kind: &str, name: &str, controller| OwnerReference {
        kind: kind.into(),
        name: name.into(),
        controller,
        ..Default::default()
    };
    p.metadata.owner_references = Some(vec![
        reference("ConfigMap", "not-me", None),
        reference("Node", "nor-me", Some(false)),
        reference("StatefulSet", "db", Some(true)),
    ]);
    assert_eq!(
        pod(&p, CP_NS).unwrap().owner,
        Some(("statefulset".into(), "db".into()))
    );
    p.metadata.owner_references = Some(vec![reference("StatefulSet", "db", None)]);
    assert_eq!(pod(&p, CP_NS).unwrap().owner, None);
}

#[test]
fn pod_ips_fall_back_to_pod_ip_and_skip_invalid() {
    let mut p = pod_obj(&[], None);
    let status = p.status.as_mut().unwrap();
    status.pod_ips = None;
    assert_eq!(pod(&p, CP_NS).unwrap().ips, vec![ip("198.18.0.7")]);

    let status = p.status.as_mut().unwrap();
    status.pod_ips = Some(vec![
        PodIP { ip: "bogus".into() },
        PodIP {
            ip: "198.18.0.8".into(),
        },
    ]);
    assert_eq!(pod(&p, CP_NS).unwrap().ips, vec![ip("198.18.0.8")]);

    // A pending pod has no IP yet.
    let status = p.status.as_mut().unwrap();
    status.pod_ips = None;
    status.pod_ip = None;
    status.phase = Some("Pending".into());
    let got = pod(&p, CP_NS).unwrap();
    assert!(got.ips.is_empty());
    assert!(!got.running);
}

#[test]
fn host_network_pod_has_no_ips() {
    let mut p = pod_obj(&[], None);
    p.spec.as_mut().unwrap().host_network = Some(true);
    let got = pod(&p, CP_NS).unwrap();
    assert!(got.ips.is_empty());
    assert!(got.running);
    p.spec.as_mut().unwrap().host_network = Some(false);
    assert_eq!(pod(&p, CP_NS).unwrap().ips.len(), 2);
}

#[test]
fn pod_phases() {
    for (phase, running) in [
        (Some("Running"), true),
        (Some("Pending"), false),
        (Some("Succeeded"), false),
        (Some("Failed"), false),
        (Some("Unknown"), false),
        (None, false),
    ] {
        let mut p = pod_obj(&[], None);
        p.status.as_mut().unwrap().phase = phase.map(Into::into);
        assert_eq!(pod(&p, CP_NS).unwrap().running, running, "{phase:?}");
    }
}

#[test]
fn pod_defaults() {
    let p = core::Pod {
        metadata: meta("ns", "bare"),
        spec: None,
        status: None,
    };
    assert_eq!(
        pod(&p, CP_NS),
        Some(Pod {
            key: key("ns", "bare"),
            ips: vec![],
            running: false,
            service_account: "default".into(),
            owner: None,
            meshed: false,
            opaque_ports: PortSet::default(),
            admin: None,
            tap: None,
        })
    );
    let mut p = pod_obj(&[], None);
    p.spec.as_mut().unwrap().service_account_name = Some(String::new());
    assert_eq!(&*pod(&p, CP_NS).unwrap().service_account, "default");
    assert_eq!(pod(&core::Pod::default(), CP_NS), None);
}
