use super::*;

fn addr() -> SocketAddr {
    "198.18.0.2:8080".parse().unwrap()
}

#[test]
fn http_series_render_with_linkerd_labels() {
    let m = Metrics::new();
    let t = m.http(
        Direction::Outbound,
        addr(),
        None,
        Some("web.default.svc.cluster.local:8080"),
        None,
    );
    t.request();
    t.request();
    t.latency(200, Duration::from_micros(2500));
    t.response(ResponseEnd {
        status: 200,
        grpc: None,
        class: Class::Success,
        error: "",
    });
    t.response(ResponseEnd {
        status: 502,
        grpc: None,
        class: Class::Failure,
        error: "connect",
    });
    // The same labels give the same series.
    let again = m.http(
        Direction::Outbound,
        addr(),
        None,
        Some("web.default.svc.cluster.local:8080"),
        None,
    );
    assert!(Arc::ptr_eq(&t, &again));

    let text = m.encode();
    let base = r#"direction="outbound",authority="web.default.svc.cluster.local:8080",target_addr="198.18.0.2:8080",tls="false""#;
    assert!(
        text.contains(&format!("request_total{{{base}}} 2\n")),
        "{text}"
    );
    assert!(text.contains(&format!(
        "response_total{{{base},status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} 1\n"
    )));
    assert!(text.contains(&format!(
        "response_total{{{base},status_code=\"502\",classification=\"failure\",grpc_status=\"\",error=\"connect\"}} 1\n"
    )));
    // 2.5ms falls in le=3 and every bucket above it, not in le=2.
    assert!(text.contains(&format!(
        "response_latency_ms_bucket{{{base},status_code=\"200\",le=\"2\"}} 0\n"
    )));
    assert!(text.contains(&format!(
        "response_latency_ms_bucket{{{base},status_code=\"200\",le=\"3\"}} 1\n"
    )));
    assert!(text.contains(&format!(
        "response_latency_ms_bucket{{{base},status_code=\"200\",le=\"+Inf\"}} 1\n"
    )));
    assert!(text.contains(&format!(
        "response_latency_ms_sum{{{base},status_code=\"200\"}} 2.500\n"
    )));
}

#[test]
fn histogram_bucket_edges() {
    let mut h = Histogram::default();
    h.record(Duration::from_millis(1)); // le=1 is inclusive
    h.record(Duration::from_micros(1001));
    h.record(Duration::from_secs(100)); // +Inf
    assert_eq!(h.buckets[0], 1);
    assert_eq!(h.buckets[1], 1);
    assert_eq!(h.buckets[LATENCY_BUCKETS_MS.len()], 1);
    assert_eq!(h.count, 3);
}

#[test]
fn tcp_connections_count_bytes_and_closes() {
    let m = Metrics::new();
    let mut c = m.tcp_open(Direction::Inbound, Peer::Src, addr(), None, None);
    c.read(10);
    c.wrote(7);
    {
        let text = m.encode();
        assert!(text.contains("tcp_open_connections{direction=\"inbound\",peer=\"src\",target_addr=\"198.18.0.2:8080\",tls=\"false\"} 1\n"));
    }
    c.error(&std::io::Error::from_raw_os_error(104));
    drop(c);
    let c2 = m.tcp_open(Direction::Inbound, Peer::Src, addr(), None, None);
    drop(c2);
    let text = m.encode();
    let l = r#"direction="inbound",peer="src",target_addr="198.18.0.2:8080",tls="false""#;
    assert!(
        text.contains(&format!("tcp_open_total{{{l}}} 2\n")),
        "{text}"
    );
    assert!(text.contains(&format!("tcp_open_connections{{{l}}} 0\n")));
    assert!(text.contains(&format!("tcp_read_bytes_total{{{l}}} 10\n")));
    assert!(text.contains(&format!("tcp_write_bytes_total{{{l}}} 7\n")));
    assert!(text.contains(&format!("tcp_close_total{{{l},errno=\"ECONNRESET\"}} 1\n")));
    assert!(text.contains(&format!("tcp_close_total{{{l},errno=\"\"}} 1\n")));
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new();
    m.http(Direction::Outbound, addr(), None, Some("a\"b\\c\nd"), None)
        .request();
    let text = m.encode();
    assert!(text.contains(r#"authority="a\"b\\c\nd""#), "{text}");
}

#[test]
fn detection_outcomes_are_counted() {
    let m = Metrics::new();
    m.detected(Direction::Outbound, Protocol::Timeout);
    m.detected(Direction::Outbound, Protocol::Timeout);
    let text = m.encode();
    assert!(text.contains("protocol_detect_total{direction=\"outbound\",result=\"timeout\"} 2\n"));
    assert!(text.contains("protocol_detect_total{direction=\"inbound\",result=\"timeout\"} 0\n"));
    assert!(text.contains("process_resident_memory_bytes "));
}

/// Past the cap, new targets' traffic is counted in one overflow series per direction
/// (HTTP) or direction and peer (TCP), and the refusals are counted; an expired
/// series makes room again.
#[test]
fn series_stay_at_the_cap_and_the_rest_overflows() {
    let m = Metrics::with_max_series(3);
    for i in 0..10 {
        let authority = format!("a{i}.example:80");
        let t = m.http(Direction::Outbound, addr(), None, Some(&authority), None);
        t.request();
        let conn = m.tcp_open(
            Direction::Outbound,
            Peer::Destination,
            addr_n(i),
            None,
            None,
        );
        drop(conn);
    }
    let text = m.encode();
    let series = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    // Three real series and the overflow one.
    assert_eq!(series("request_total{"), 4, "{text}");
    assert!(
        text.contains("request_total{direction=\"outbound\",series_overflow=\"true\"} 7"),
        "{text}"
    );
    assert!(
        text.contains("metrics_series_overflow_total{family=\"http\",direction=\"outbound\"} 7"),
        "{text}"
    );
    assert_eq!(series("tcp_open_total{"), 4, "{text}");
    assert!(
        text.contains(
            "tcp_open_total{direction=\"outbound\",peer=\"dst\",series_overflow=\"true\"} 7"
        ),
        "{text}"
    );
    assert!(
        text.contains("metrics_series_overflow_total{family=\"tcp\",direction=\"outbound\"} 7"),
        "{text}"
    );
    // Once the idle ones expire, new targets get series of their own again.
    m.expire(0);
    m.expire(0);
    m.http(
        Direction::Outbound,
        addr(),
        None,
        Some("new.example:80"),
        None,
    )
    .request();
    assert!(m.encode().contains("authority=\"new.example:80\""));
}

fn addr_n(i: u16) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 2], 9000 + i))
}

#[test]
fn idle_series_expire_but_held_ones_stay() {
    let m = Metrics::new();
    m.http(Direction::Outbound, addr(), None, Some("once:80"), None)
        .request();
    let held = m.http(Direction::Outbound, addr(), None, Some("held:80"), None);
    let conn = m.tcp_open(Direction::Inbound, Peer::Src, addr(), None, None);
    m.expire(1);
    assert!(
        m.encode().contains("authority=\"once:80\""),
        "one idle epoch is within retention"
    );
    m.expire(1);
    let text = m.encode();
    assert!(!text.contains("authority=\"once:80\""), "{text}");
    assert!(
        text.contains("authority=\"held:80\""),
        "a series in use stays"
    );
    assert!(
        text.contains("tcp_open_connections{direction=\"inbound\""),
        "an open connection's series stays"
    );
    // Using a series again renews it; a closed connection's series goes at once when
    // it was last opened long ago.
    drop(held);
    drop(conn);
    m.http(Direction::Outbound, addr(), None, Some("held:80"), None)
        .request();
    m.expire(1);
    let text = m.encode();
    assert!(text.contains("authority=\"held:80\""), "{text}");
    assert!(!text.contains("tcp_open_connections{"), "{text}");
    m.expire(1);
    assert!(!m.encode().contains("held:80"));
}

#[test]
fn dst_labels_are_merged_sanitized_and_sorted() {
    let set: HashMap<String, String> = [("namespace", "emojivoto"), ("service", "web-svc")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    let endpoint: HashMap<String, String> = [
        ("pod", "web-0"),
        ("deployment", "web"),
        ("app.kubernetes.io/name", "we\"b"),
        ("namespace", "override"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let labels = dst_labels(&set, &endpoint).unwrap();
    assert_eq!(
        &*labels,
        r#"dst_app_kubernetes_io_name="we\"b",dst_deployment="web",dst_namespace="override",dst_pod="web-0",dst_service="web-svc""#
    );
    assert_eq!(dst_labels(&HashMap::new(), &HashMap::new()), None);
}

#[test]
fn dst_labels_split_series() {
    let m = Metrics::new();
    let web0: Arc<str> = r#"dst_pod="web-0""#.into();
    let web1: Arc<str> = r#"dst_pod="web-1""#.into();
    let a = m.http(
        Direction::Outbound,
        addr(),
        None,
        Some("web:80"),
        Some(&web0),
    );
    let b = m.http(
        Direction::Outbound,
        addr(),
        None,
        Some("web:80"),
        Some(&web1),
    );
    let plain = m.http(Direction::Outbound, addr(), None, Some("web:80"), None);
    assert!(!Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&a, &plain));
    // An equal label string (not the same allocation) finds the same series.
    let again: Arc<str> = r#"dst_pod="web-0""#.into();
    assert!(Arc::ptr_eq(
        &a,
        &m.http(
            Direction::Outbound,
            addr(),
            None,
            Some("web:80"),
            Some(&again)
        )
    ));
    a.request();
    let _c = m.tcp_open(
        Direction::Outbound,
        Peer::Destination,
        addr(),
        None,
        Some(&web1),
    );
    let text = m.encode();
    assert!(
        text.contains(r#"request_total{direction="outbound",authority="web:80",target_addr="198.18.0.2:8080",tls="false",dst_pod="web-0"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tcp_open_total{direction="outbound",peer="dst",target_addr="198.18.0.2:8080",tls="false",dst_pod="web-1"} 1"#),
        "{text}"
    );
    // Discovery's gauges appear only when discovery is on.
    assert!(!text.contains("outbound_discovery"), "{text}");
    m.discovery().enable();
    m.discovery().destinations(2);
    m.discovery().endpoints(5);
    let text = m.encode();
    assert!(
        text.contains("outbound_discovery_destinations 2\n"),
        "{text}"
    );
    assert!(text.contains("outbound_discovery_endpoints 5\n"), "{text}");
}

#[test]
fn mesh_tls_series_name_the_peer() {
    let m = Metrics::new();
    let api: Arc<str> = "api.default.serviceaccount.identity.mesh.cluster.local".into();
    let web: Arc<str> = "web.default.serviceaccount.identity.mesh.cluster.local".into();
    let out = m.http(
        Direction::Outbound,
        addr(),
        Some(&api),
        Some("api:80"),
        None,
    );
    let plain = m.http(Direction::Outbound, addr(), None, Some("api:80"), None);
    assert!(
        !Arc::ptr_eq(&out, &plain),
        "TLS and plaintext are separate series"
    );
    out.request();
    m.http(Direction::Inbound, addr(), Some(&web), None, None)
        .request();
    let _c = m.tcp_open(Direction::Inbound, Peer::Src, addr(), Some(&web), None);
    let text = m.encode();
    for want in [
        r#"request_total{direction="outbound",authority="api:80",target_addr="198.18.0.2:8080",tls="true",server_id="api.default.serviceaccount.identity.mesh.cluster.local"} 1"#,
        r#"request_total{direction="inbound",target_addr="198.18.0.2:8080",tls="true",client_id="web.default.serviceaccount.identity.mesh.cluster.local"} 1"#,
        r#"tcp_open_total{direction="inbound",peer="src",target_addr="198.18.0.2:8080",tls="true",client_id="web.default.serviceaccount.identity.mesh.cluster.local"} 1"#,
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    // Refusals are exported only with identity on, every reason from zero.
    assert!(!text.contains("tls_refused_total"), "{text}");
    m.identity().enable();
    m.tls_refused(Direction::Outbound, crate::tls::Refused::WrongIdentity);
    let text = m.encode();
    assert!(
        text.contains("tls_refused_total{direction=\"outbound\",reason=\"wrong_identity\"} 1\n")
    );
    assert!(text.contains("tls_refused_total{direction=\"inbound\",reason=\"expired\"} 0\n"));
}
