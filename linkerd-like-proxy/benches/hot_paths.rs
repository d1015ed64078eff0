//! Micro-benchmarks of the proxy's per-connection and per-request hot paths:
//! protocol detection, response classification, metric recording, the balancer's
//! pick, tap's check while nobody taps, and inbound authorization.
//!
//! Run with `cargo bench -p mesh-proxy --bench hot_paths`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, StatusCode};
use mesh_api::policy as api;
use mesh_proxy::{
    balance::{self, Discovered},
    classify,
    detect::{detect, H2_PREFACE},
    metrics::{Direction, Metrics, Peer, ResponseEnd},
    policy::{self, Policy, PortPolicy},
    tap,
};
use std::time::Duration;

fn detection(c: &mut Criterion) {
    let h1 = b"GET /api/v1/users/12345?expand=true HTTP/1.1\r\nHost: users.default.svc.cluster.local\r\n\r\n";
    let mut h2 = H2_PREFACE.to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let tls = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
    let mut g = c.benchmark_group("detect");
    g.bench_function("http1", |b| b.iter(|| detect(black_box(h1))));
    g.bench_function("h2", |b| b.iter(|| detect(black_box(&h2))));
    g.bench_function("tls", |b| b.iter(|| detect(black_box(&tls))));
    g.finish();
}

fn classification(c: &mut Criterion) {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "14".parse().unwrap());
    let mut g = c.benchmark_group("classify");
    g.bench_function("http", |b| {
        b.iter(|| classify::classify(black_box(StatusCode::SERVICE_UNAVAILABLE), false, None))
    });
    g.bench_function("grpc_trailers", |b| {
        b.iter(|| {
            classify::classify(
                StatusCode::OK,
                true,
                classify::grpc_status(black_box(&trailers)),
            )
        })
    });
    g.finish();
}

fn recording(c: &mut Criterion) {
    let m = Metrics::new();
    let addr: std::net::SocketAddr = "198.18.0.2:8080".parse().unwrap();
    // Populate a few series so lookups are not trivially into empty maps.
    for port in 1..50u16 {
        m.http(
            Direction::Outbound,
            std::net::SocketAddr::new(addr.ip(), port),
            None,
            Some("other:80"),
            None,
        )
        .request();
    }
    let mut g = c.benchmark_group("metrics");
    g.bench_function("http_request_and_response", |b| {
        b.iter(|| {
            let t = m.http(
                Direction::Outbound,
                addr,
                None,
                Some("web.default.svc.cluster.local:8080"),
                None,
            );
            t.request();
            t.latency(200, Duration::from_micros(830));
            t.response(ResponseEnd {
                status: 200,
                grpc: None,
                class: classify::Class::Success,
                error: "",
            });
        })
    });
    g.bench_function("tcp_open_close", |b| {
        b.iter(|| {
            let c = m.tcp_open(Direction::Inbound, Peer::Src, addr, None, None);
            c.read(1024);
            c.wrote(1024);
        })
    });
    g.bench_function("encode_100_series", |b| {
        b.iter(|| black_box(m.encode().len()))
    });
    g.finish();
}

fn balancing(c: &mut Criterion) {
    let found = (1..=100u8)
        .map(|i| Discovered {
            addr: std::net::SocketAddr::from(([192, 0, 2, i], 8080)),
            labels: None,
            identity: None,
        })
        .collect();
    let endpoints = balance::add(&[], found, true, tokio::time::Instant::now());
    let mut g = c.benchmark_group("balance");
    // A pick, its pending claim, a latency sample and the release: what each request
    // to a discovered destination pays.
    g.bench_function("p2c_pick_observe_100", |b| {
        b.iter(|| {
            let load = balance::pick(black_box(&endpoints), None).expect("endpoints");
            load.observe();
        })
    });
    g.finish();
}

fn tapping(c: &mut Criterion) {
    let registry = tap::Registry::new(None, Metrics::new());
    let mut g = c.benchmark_group("tap");
    // What the tap layer asks of every request while nobody taps (one relaxed load);
    // the request then goes on with the inner service's own future.
    g.bench_function("idle_check", |b| b.iter(|| black_box(&registry).is_idle()));
    g.finish();
}

/// A server with `n` authorizations (each one identity, from one /16) and `n` routes
/// (path prefixes, with no authorizations of their own).
fn big_policy(n: usize) -> Policy {
    let net = |a: u8, b: u8, len| api::Network {
        net: Some(api::IpNet {
            ip: Some(std::net::IpAddr::from([10, a, b, 0]).into()),
            prefix_len: len,
        }),
        except: vec![],
    };
    let meta = |kind: &str, name: String| {
        Some(api::Meta {
            group: "policy.mesh.rs".into(),
            kind: kind.into(),
            name,
        })
    };
    let authorizations = (0..n)
        .map(|i| api::Authz {
            meta: meta("authorizationpolicy", format!("authz-{i}")),
            networks: vec![net(i as u8, 0, 16)],
            authentication: Some(api::Authentication {
                permit: Some(api::authentication::Permit::MeshTls(
                    api::authentication::MeshTls {
                        identities: vec![format!(
                            "sa-{i}.ns.serviceaccount.identity.mesh.cluster.local"
                        )],
                        suffixes: vec![],
                    },
                )),
            }),
        })
        .collect();
    let http_routes = (0..n)
        .map(|i| api::HttpRoute {
            meta: meta("httproute", format!("route-{i}")),
            matches: vec![api::HttpMatch {
                path: Some(api::PathMatch {
                    kind: Some(api::path_match::Kind::Prefix(format!("/api/r{i}"))),
                }),
                method: "GET".into(),
                headers: vec![],
            }],
            authorizations: vec![],
            hostnames: vec![],
        })
        .collect();
    Policy::from_proto(&api::InboundPolicy {
        server: meta("server", "big".into()),
        protocol: None,
        authorizations,
        http_routes,
        fallback: api::Fallback::Deny as i32,
    })
    .expect("a valid policy")
}

fn authorizing(c: &mut Criterion) {
    let m = Metrics::new();
    let n = 100;
    // The worst case: the request matches the last route, and the client the last
    // authorization.
    let big = PortPolicy::fixed(8080, big_policy(n));
    let client: std::net::SocketAddr = format!("10.{}.0.7:40000", n - 1).parse().unwrap();
    let id: std::sync::Arc<str> =
        format!("sa-{}.ns.serviceaccount.identity.mesh.cluster.local", n - 1).into();
    let req = http::Request::get(format!("/api/r{}/items/42", n - 1))
        .body(())
        .unwrap();
    let open = PortPolicy::fixed(
        8080,
        Policy::from_proto(&policy::DefaultPolicy::AllUnauthenticated.inbound_policy(&[])).unwrap(),
    );
    let mut g = c.benchmark_group("authz");
    // What each inbound request pays with policy on: the decision, its metric and
    // what tap is given.
    g.bench_function("http_100_authz_100_routes", |b| {
        b.iter(|| {
            let (d, failed) =
                policy::enforce::http(&m, black_box(&big), client, Some(&id), black_box(&req));
            assert!(failed.is_none());
            black_box(d);
        })
    });
    g.bench_function("tcp_100_authz", |b| {
        b.iter(|| assert!(policy::enforce::tcp(&m, black_box(&big), client, Some(&id))))
    });
    // The default policy, `all-unauthenticated`.
    g.bench_function("http_all_unauthenticated", |b| {
        b.iter(|| {
            let (d, failed) =
                policy::enforce::http(&m, black_box(&open), client, None, black_box(&req));
            assert!(failed.is_none());
            black_box(d);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    authorizing,
    detection,
    classification,
    recording,
    balancing,
    tapping
);
criterion_main!(benches);
