use super::*;
use api::update::Update as Kind;
use mesh_api::net::TcpAddress;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i], 8080))
}

fn endpoint(a: SocketAddr, pod: &str) -> api::Endpoint {
    api::Endpoint {
        addr: Some(a.into()),
        weight: 10_000,
        metric_labels: [("pod".to_string(), pod.to_string())].into(),
        ..Default::default()
    }
}

fn add(endpoints: Vec<api::Endpoint>) -> api::Update {
    api::Update {
        update: Some(Kind::Add(api::AddSet {
            endpoints,
            metric_labels: [
                ("namespace".to_string(), "test".to_string()),
                ("service".to_string(), "web".to_string()),
            ]
            .into(),
        })),
    }
}

fn remove(addrs: &[SocketAddr]) -> api::Update {
    api::Update {
        update: Some(Kind::Remove(api::RemoveSet {
            addrs: addrs.iter().map(|a| TcpAddress::from(*a)).collect(),
        })),
    }
}

fn no_endpoints(exists: bool) -> api::Update {
    api::Update {
        update: Some(Kind::NoEndpoints(api::NoEndpoints { exists })),
    }
}

fn shared(metrics: &Metrics) -> Arc<Endpoints> {
    Arc::new(Endpoints {
        path: "web.test.svc.cluster.local:80".into(),
        state: watch::Sender::new(State::Pending),
        metrics: metrics.clone(),
    })
}

fn endpoints(s: &Endpoints) -> Vec<SocketAddr> {
    match s.resolution() {
        Resolution::Endpoints(mut e) => {
            e.sort();
            e
        }
        other => panic!("not known: {other:?}"),
    }
}

fn gauge(m: &Metrics) -> String {
    let text = m.encode();
    text.lines()
        .find(|l| l.starts_with("outbound_discovery_endpoints "))
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn updates_follow_the_protocol() {
    let m = Metrics::new();
    m.discovery().enable();
    let s = shared(&m);
    assert_eq!(s.resolution(), Resolution::Pending);
    assert!(matches!(s.pick(None), Resolved::Fallback));

    // The first message is the whole state.
    assert!(s.apply(
        add(vec![endpoint(addr(1), "web-1"), endpoint(addr(2), "web-2")]),
        true
    ));
    assert_eq!(endpoints(&s), [addr(1), addr(2)]);
    assert_eq!(gauge(&m), "outbound_discovery_endpoints 2");
    // Later Adds merge, Removes remove.
    assert!(s.apply(add(vec![endpoint(addr(3), "web-3")]), false));
    assert!(!s.apply(remove(&[addr(1)]), false));
    assert_eq!(endpoints(&s), [addr(2), addr(3)]);
    let Resolved::Endpoint(b) = s.pick(None) else {
        panic!("has endpoints")
    };
    let labels = b.load.labels().unwrap();
    assert!(labels.contains(r#"dst_namespace="test""#), "{labels}");
    assert!(labels.contains(r#"dst_service="web""#), "{labels}");
    assert!(labels.contains(r#"dst_pod="web-"#), "{labels}");
    drop(b);

    // Known and empty: fail, do not fall back.
    assert!(s.apply(no_endpoints(true), false));
    assert_eq!(s.resolution(), Resolution::Endpoints(vec![]));
    assert!(
        matches!(s.pick(None), Resolved::NoEndpoints(p) if &*p == "web.test.svc.cluster.local:80")
    );
    assert_eq!(gauge(&m), "outbound_discovery_endpoints 0");
    // Endpoints come back.
    assert!(s.apply(add(vec![endpoint(addr(4), "web-4")]), false));
    assert_eq!(endpoints(&s), [addr(4)]);
    // Removing the last one is the same as no endpoints.
    s.apply(remove(&[addr(4)]), false);
    assert!(matches!(s.pick(None), Resolved::NoEndpoints(_)));
    // Unknown: traffic goes where the client sent it.
    assert!(s.apply(no_endpoints(false), false));
    assert_eq!(s.resolution(), Resolution::Unknown);
    assert!(matches!(s.pick(None), Resolved::Fallback));
    // A removal for an unknown destination changes nothing.
    s.apply(remove(&[addr(4)]), false);
    assert_eq!(s.resolution(), Resolution::Unknown);
}

#[tokio::test]
async fn a_new_stream_replaces_the_state_and_keeps_load() {
    let s = shared(&Metrics::new());
    s.apply(
        add(vec![endpoint(addr(1), "a"), endpoint(addr(2), "b")]),
        true,
    );
    let Resolved::Endpoint(held) = s.pick(None) else {
        panic!()
    };
    let kept = held.load.addr();
    let other = if kept == addr(1) { addr(2) } else { addr(1) };
    // After a reconnect the first message names the kept endpoint and a new one.
    s.apply(add(vec![endpoint(kept, "a"), endpoint(addr(3), "c")]), true);
    let mut want = vec![kept, addr(3)];
    want.sort();
    assert_eq!(endpoints(&s), want);
    assert!(!endpoints(&s).contains(&other));
    // The request in flight still counts against the kept endpoint.
    let state = s.state.borrow();
    let State::Known(eps) = &*state else { panic!() };
    let e = eps.iter().find(|e| e.addr() == kept).unwrap();
    assert_eq!(e.pending(), 1);
}

#[tokio::test]
async fn bad_messages_are_skipped() {
    use mesh_api::net::{ip_address::Ip, IpAddress};
    let s = shared(&Metrics::new());
    let bad = |addr: Option<TcpAddress>| api::Endpoint {
        addr,
        ..Default::default()
    };
    let v6_short = TcpAddress {
        ip: Some(IpAddress {
            ip: Some(Ip::Ipv6(vec![1, 2, 3])),
        }),
        port: 80,
    };
    let big_port = TcpAddress {
        port: 70_000,
        ..TcpAddress::from(addr(9))
    };
    let zero_port = TcpAddress::from(SocketAddr::from(([192, 0, 2, 9], 0)));
    let unspecified = TcpAddress::from(SocketAddr::from(([0, 0, 0, 0], 80)));
    s.apply(
        add(vec![
            bad(None),
            bad(Some(TcpAddress { ip: None, port: 80 })),
            bad(Some(v6_short.clone())),
            bad(Some(big_port)),
            bad(Some(zero_port)),
            bad(Some(unspecified)),
            endpoint(addr(1), "ok"),
        ]),
        true,
    );
    assert_eq!(endpoints(&s), [addr(1)]);
    assert!(!s.apply(api::Update { update: None }, false));
    s.apply(
        api::Update {
            update: Some(Kind::Remove(api::RemoveSet {
                addrs: vec![v6_short],
            })),
        },
        false,
    );
    assert_eq!(endpoints(&s), [addr(1)]);
}

fn dst(s: Arc<Endpoints>, wait: Duration) -> Destination {
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    Destination {
        shared: s,
        client: DestinationClient::new(channel),
        context: "".into(),
        timeout: wait,
        profile: std::sync::OnceLock::new(),
        deadline: Instant::now() + wait,
        last_used: AtomicU64::new(0),
        epoch: Arc::default(),
        task: tokio::spawn(std::future::pending::<()>()).abort_handle(),
    }
}

#[tokio::test(start_paused = true)]
async fn first_use_waits_for_the_answer_at_most_the_timeout() {
    let m = Metrics::new();
    // No answer: the first use waits the whole timeout, then falls back...
    let d = dst(shared(&m), Duration::from_secs(1));
    let start = Instant::now();
    assert!(matches!(d.resolve().await, Resolved::Fallback));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    // ...and later uses do not wait at all.
    let again = Instant::now();
    assert!(matches!(d.resolve().await, Resolved::Fallback));
    assert_eq!(again.elapsed(), Duration::ZERO);

    // An answer ends the wait at once.
    let s = shared(&m);
    let d = dst(s.clone(), Duration::from_secs(1));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        s.apply(add(vec![endpoint(addr(1), "a")]), true);
    });
    let start = Instant::now();
    assert!(matches!(d.resolve().await, Resolved::Endpoint(_)));
    assert_eq!(start.elapsed(), Duration::from_millis(30));
}

#[tokio::test]
async fn idle_destinations_are_swept_unless_held_or_used() {
    let env = std::collections::HashMap::from([
        ("MESH_PROXY_DESTINATION_ADDR", "127.0.0.1:1"),
        ("MESH_PROXY_DISCOVERY_TIMEOUT", "10ms"),
    ]);
    let config = crate::Config::from_env(&env).unwrap();
    let m = Metrics::new();
    let disc = Discovery::new(
        config.discovery.as_ref(),
        None,
        config.http.connect_timeout,
        m.clone(),
        Arc::from([]),
    )
    .unwrap();
    let held = disc.by_addr(addr(1));
    drop(disc.by_name("web.test.svc.cluster.local:80"));
    assert_eq!(disc.destinations(), 2);
    assert!(m.encode().contains("outbound_discovery_destinations 2\n"));
    // Lookups share one destination.
    assert!(Arc::ptr_eq(&held, &disc.by_addr(addr(1))));
    for _ in 0..IDLE_SWEEPS - 1 {
        disc.sweep();
    }
    assert_eq!(disc.destinations(), 2, "not idle long enough yet");
    // A use renews the name.
    let _ = disc
        .by_name("web.test.svc.cluster.local:80")
        .resolve()
        .await;
    disc.sweep();
    assert_eq!(disc.destinations(), 2);
    for _ in 0..IDLE_SWEEPS {
        disc.sweep();
    }
    // The name went; the address stays while a connection holds it.
    assert_eq!(disc.destinations(), 1);
    assert!(disc.resolution("web.test.svc.cluster.local:80").is_none());
    assert!(disc.resolution(&addr(1).to_string()).is_some());
    drop(held);
    disc.sweep();
    assert_eq!(disc.destinations(), 0);
    assert!(m.encode().contains("outbound_discovery_destinations 0\n"));
}
