//! Micro-benchmarks of the per-request profile work: route matching over a profile
//! of 20 routes, response classification by a route's classes, the retry budget, the
//! traffic split's pick and the retry backoff.
//!
//! Run with `cargo bench -p mesh-proxy --bench routes`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{Method, StatusCode};
use mesh_api::destination::{
    request_match::{Match, Seq},
    response_match, DestinationProfile, HttpStatusRange, RequestMatch, ResponseClass,
    ResponseMatch, Route, WeightedDst,
};
use mesh_proxy::profile::{backoff, Budget, Profile};
use rand::{rngs::StdRng, SeedableRng};
use std::time::Duration;

fn req(m: Match) -> RequestMatch {
    RequestMatch { r#match: Some(m) }
}

fn status(min: u32, max: u32) -> ResponseMatch {
    ResponseMatch {
        r#match: Some(response_match::Match::Status(HttpStatusRange { min, max })),
    }
}

/// 20 routes as `mesh profile --open-api` would write them: a method and an anchored
/// path regex with `{param}` segments, each with a response class per status.
fn profile() -> Profile {
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let routes = (0..20)
        .map(|i| {
            let method = methods[i % methods.len()];
            let path = format!("/api/v1/resource{i}/[^/]*/items/[^/]*");
            Route {
                name: format!("{method} /api/v1/resource{i}/{{id}}/items/{{item}}"),
                condition: Some(req(Match::All(Seq {
                    matches: vec![
                        req(Match::PathRegex(format!("^(?:{path})$"))),
                        req(Match::Method(method.into())),
                    ],
                }))),
                response_classes: vec![
                    ResponseClass {
                        condition: Some(status(500, 599)),
                        is_failure: true,
                    },
                    ResponseClass {
                        condition: Some(status(429, 429)),
                        is_failure: true,
                    },
                ],
                is_retryable: i % 2 == 0,
                timeout_ms: 1000,
                ..Default::default()
            }
        })
        .collect();
    Profile::from_proto(
        &DestinationProfile {
            routes,
            dst_overrides: vec![
                WeightedDst {
                    authority: "a.ns.svc.cluster.local".into(),
                    weight: 9000,
                },
                WeightedDst {
                    authority: "b.ns.svc.cluster.local".into(),
                    weight: 1000,
                },
            ],
            ..Default::default()
        },
        8080,
    )
}

fn matching(c: &mut Criterion) {
    let p = profile();
    // Route 19 is a DELETE (19 % 4 == 3); a GET of the same path would miss it.
    let last = "/api/v1/resource19/12345/items/abcdef";
    assert_eq!(
        p.route(&Method::DELETE, last).name().as_ref(),
        "DELETE /api/v1/resource19/{id}/items/{item}"
    );
    let miss = "/api/v2/unknown/12345/items/abcdef";
    assert!(p.route(&Method::GET, miss).is_default());
    let mut g = c.benchmark_group("profile_route");
    g.bench_function("first_of_20", |b| {
        b.iter(|| {
            p.route(
                black_box(&Method::GET),
                black_box("/api/v1/resource0/12345/items/abcdef"),
            )
        })
    });
    g.bench_function("last_of_20", |b| {
        b.iter(|| p.route(black_box(&Method::DELETE), black_box(last)))
    });
    g.bench_function("default", |b| {
        b.iter(|| p.route(black_box(&Method::GET), black_box(miss)))
    });
    // The whole per-request profile cost: find the route, then classify its response.
    g.bench_function("last_of_20_and_classify", |b| {
        b.iter(|| {
            let r = p.route(black_box(&Method::DELETE), black_box(last));
            r.classify(black_box(StatusCode::SERVICE_UNAVAILABLE), false, None)
        })
    });
    g.finish();
}

fn classification(c: &mut Criterion) {
    let p = profile();
    let r = p.route(&Method::GET, "/api/v1/resource0/1/items/2").clone();
    let d = p.default_route().clone();
    let mut g = c.benchmark_group("profile_classify");
    g.bench_function("class_matches", |b| {
        b.iter(|| r.classify(black_box(StatusCode::TOO_MANY_REQUESTS), false, None))
    });
    g.bench_function("falls_back_grpc", |b| {
        b.iter(|| r.classify(black_box(StatusCode::OK), true, black_box(Some(14))))
    });
    g.bench_function("default_route", |b| {
        b.iter(|| d.classify(black_box(StatusCode::OK), false, None))
    });
    g.finish();
}

fn retries(c: &mut Criterion) {
    let budget = Budget::new(0.2, 10, Duration::from_secs(10));
    let p = profile();
    let split = p.split().expect("the profile has a split");
    let mut rng = StdRng::seed_from_u64(1);
    let mut g = c.benchmark_group("profile_retry");
    g.bench_function("budget_deposit", |b| b.iter(|| budget.deposit()));
    // With the time already read (the caller reads the clock once per request anyway):
    // what the lock and the window cost, without the clock.
    let now = tokio::time::Instant::now();
    g.bench_function("budget_deposit_at", |b| {
        b.iter(|| budget.deposit_at(black_box(now)))
    });
    // Mostly allowed (the deposits above feed it), so this measures the whole path.
    g.bench_function("budget_deposit_and_withdraw", |b| {
        b.iter(|| {
            budget.deposit();
            budget.try_withdraw()
        })
    });
    g.bench_function("split_pick", |b| b.iter(|| split.pick(&mut rng).len()));
    g.bench_function("backoff", |b| b.iter(|| backoff(black_box(3), &mut rng)));
    g.finish();
}

criterion_group!(benches, matching, classification, retries);
criterion_main!(benches);
