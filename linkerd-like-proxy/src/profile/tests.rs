use super::*;
use mesh_api::destination::{
    request_match, response_match, DestinationProfile, HttpStatusRange, RequestMatch as PReq,
    ResponseClass as PClass, ResponseMatch as PRsp, RetryBudget, Route as PRoute, WeightedDst,
};
use rand::{rngs::StdRng, SeedableRng};

// === builders ===

fn path(re: &str) -> PReq {
    PReq {
        r#match: Some(request_match::Match::PathRegex(re.into())),
    }
}

fn method(m: &str) -> PReq {
    PReq {
        r#match: Some(request_match::Match::Method(m.into())),
    }
}

fn all(ms: Vec<PReq>) -> PReq {
    PReq {
        r#match: Some(request_match::Match::All(request_match::Seq {
            matches: ms,
        })),
    }
}

fn any(ms: Vec<PReq>) -> PReq {
    PReq {
        r#match: Some(request_match::Match::Any(request_match::Seq {
            matches: ms,
        })),
    }
}

fn not(m: PReq) -> PReq {
    PReq {
        r#match: Some(request_match::Match::Not(Box::new(m))),
    }
}

fn route(name: &str, condition: PReq) -> PRoute {
    PRoute {
        name: name.into(),
        condition: Some(condition),
        metrics_labels: [("route".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

fn status(min: u32, max: u32) -> PRsp {
    PRsp {
        r#match: Some(response_match::Match::Status(HttpStatusRange { min, max })),
    }
}

fn rsp_not(m: PRsp) -> PRsp {
    PRsp {
        r#match: Some(response_match::Match::Not(Box::new(m))),
    }
}

fn rsp_all(ms: Vec<PRsp>) -> PRsp {
    PRsp {
        r#match: Some(response_match::Match::All(response_match::Seq {
            matches: ms,
        })),
    }
}

fn rsp_any(ms: Vec<PRsp>) -> PRsp {
    PRsp {
        r#match: Some(response_match::Match::Any(response_match::Seq {
            matches: ms,
        })),
    }
}

fn class(condition: PRsp, is_failure: bool) -> PClass {
    PClass {
        condition: Some(condition),
        is_failure,
    }
}

fn profile(routes: Vec<PRoute>) -> Profile {
    Profile::from_proto(
        &DestinationProfile {
            routes,
            ..Default::default()
        },
        8080,
    )
}

fn name<'a>(p: &'a Profile, m: &Method, path: &str) -> &'a str {
    p.route(m, path).name()
}

fn code(c: u16) -> StatusCode {
    StatusCode::from_u16(c).unwrap()
}

// === routes ===

#[test]
fn first_matching_route_wins() {
    let p = profile(vec![
        route("list", path("/api/list")),
        route("api", path("/api/.*")),
        route("also-list", path("/api/list")),
    ]);
    assert_eq!(name(&p, &Method::GET, "/api/list"), "list");
    assert_eq!(name(&p, &Method::GET, "/api/other"), "api");
    assert_eq!(p.routes().len(), 3);
}

#[test]
fn unmatched_requests_get_the_default_route() {
    let p = profile(vec![route("list", path("/api/list"))]);
    let r = p.route(&Method::GET, "/elsewhere");
    assert!(r.is_default());
    assert!(Arc::ptr_eq(r, p.default_route()));
    assert_eq!(r.name().as_ref(), "");
    assert_eq!(r.labels(), "");
    assert!(!r.is_retryable());
    assert_eq!(r.timeout(), None);
    assert_eq!(r.max_retries(), None);
    assert!(r.classes().is_empty());
    // A profile without routes has only the default route.
    assert!(profile(vec![]).route(&Method::GET, "/").is_default());
    assert!(!profile(vec![]).has_routes_or_split());
    assert!(p.has_routes_or_split());
}

#[test]
fn path_regexes_match_the_whole_path() {
    let p = profile(vec![
        route("list", path("/api/list")),
        route("anchored", path("^/v2/[^/]+$")),
        route("controller-anchored", path("^(?:/v3/.*)$")),
    ]);
    assert_eq!(name(&p, &Method::GET, "/api/list"), "list");
    assert!(p.route(&Method::GET, "/api/listx").is_default());
    assert!(p.route(&Method::GET, "/x/api/list").is_default());
    assert_eq!(name(&p, &Method::GET, "/v2/books"), "anchored");
    assert!(p.route(&Method::GET, "/v2/books/1").is_default());
    assert_eq!(name(&p, &Method::GET, "/v3/a/b"), "controller-anchored");
    // An alternation applies inside the anchors, not around them.
    let p = profile(vec![route("alt", path("/a|/b"))]);
    assert_eq!(name(&p, &Method::GET, "/a"), "alt");
    assert!(p.route(&Method::GET, "/a/x").is_default());
    assert!(p.route(&Method::GET, "/x/b").is_default());
}

/// The proxy's route matcher and the controller's validator read a path regex by one
/// rule: on every example of `mesh_api::path_regex::EXAMPLES`, the route matches
/// exactly the paths the table says, whether the pattern arrives as written or as the
/// controller sends it (`^(?:pattern)$`).
#[test]
fn path_regexes_follow_the_shared_rule() {
    for (pattern, path_, matches) in mesh_api::path_regex::EXAMPLES {
        for sent in [pattern.to_string(), path_regex::whole_path(pattern)] {
            let p = profile(vec![route("r", path(&sent))]);
            assert_eq!(p.routes().count(), 1, "{sent:?} compiles");
            assert_eq!(
                !p.route(&Method::GET, path_).is_default(),
                *matches,
                "{sent:?} on {path_:?}"
            );
        }
    }
}

#[test]
fn methods_match_exactly() {
    let p = profile(vec![
        route("post", method("POST")),
        route("custom", method("PURGE")),
    ]);
    assert_eq!(name(&p, &Method::POST, "/any"), "post");
    assert_eq!(
        name(&p, &Method::from_bytes(b"PURGE").unwrap(), "/"),
        "custom"
    );
    assert!(p.route(&Method::GET, "/any").is_default());
}

#[test]
fn all_any_not_nest() {
    let p = profile(vec![
        // GET or HEAD of anything under /books, except /books/admin.
        route(
            "read-books",
            all(vec![
                path("/books(/.*)?"),
                any(vec![method("GET"), method("HEAD")]),
                not(path("/books/admin")),
            ]),
        ),
        route("not-delete", not(method("DELETE"))),
        // An empty `all` matches everything; an empty `any` nothing.
        route("never", any(vec![])),
        route("always", all(vec![])),
    ]);
    assert_eq!(name(&p, &Method::GET, "/books/1"), "read-books");
    assert_eq!(name(&p, &Method::HEAD, "/books"), "read-books");
    assert_eq!(name(&p, &Method::GET, "/books/admin"), "not-delete");
    assert_eq!(name(&p, &Method::POST, "/books/1"), "not-delete");
    assert_eq!(name(&p, &Method::DELETE, "/books/1"), "always");
}

#[test]
fn invalid_routes_are_skipped() {
    let huge = format!("/({})", vec!["[a-z]{1,200}"; 50].join("|"));
    let mut deep = path("/deep");
    for _ in 0..100 {
        deep = not(deep);
    }
    let p = profile(vec![
        route("bad-regex", path("/api/(")),
        route("escape", path("/a)|(/b")),
        route("too-big", path(&huge)),
        route("empty", PReq { r#match: None }),
        route(
            "nested-empty",
            all(vec![method("GET"), PReq { r#match: None }]),
        ),
        route("bad-method", method("GE T")),
        route("no-method", method("")),
        route("too-deep", deep),
        PRoute {
            name: "no-condition".into(),
            ..Default::default()
        },
        route("good", path("/.*")),
    ]);
    let names: Vec<_> = p.routes().map(|r| r.name().to_string()).collect();
    assert_eq!(names, ["good"]);
    assert_eq!(name(&p, &Method::GET, "/api/("), "good");
}

#[test]
fn regexes_over_the_size_limit_are_refused() {
    let huge = format!("/({})", vec!["[a-z]{1,200}"; 50].join("|"));
    // Valid, and compiles without the limit: the limit is what refuses it.
    assert!(Regex::new(&huge).is_ok());
    assert!(matches!(
        compile_path(&huge),
        Err(InvalidMatch::Regex(InvalidPathRegex::TooLarge { .. }))
    ));
    assert!(compile_path("/api/[^/]+/items").is_ok());
}

#[test]
fn route_settings_come_from_the_proto() {
    let p = profile(vec![
        PRoute {
            is_retryable: true,
            timeout_ms: 250,
            max_retries: 3,
            ..route("r", path("/r"))
        },
        route("plain", path("/p")),
        // No name: the metrics label names it.
        PRoute {
            name: String::new(),
            ..route("from-label", path("/l"))
        },
    ]);
    let r = p.route(&Method::GET, "/r");
    assert!(r.is_retryable());
    assert_eq!(r.timeout(), Some(Duration::from_millis(250)));
    assert_eq!(r.max_retries(), Some(3));
    let plain = p.route(&Method::GET, "/p");
    assert!(!plain.is_retryable());
    assert_eq!(plain.timeout(), None);
    assert_eq!(plain.max_retries(), None);
    assert_eq!(name(&p, &Method::GET, "/l"), "from-label");
}

#[test]
fn labels_are_escaped() {
    let p = profile(vec![
        route("GET /books/{id}", path("/b")),
        route("a\"b\\c\nd", path("/q")),
    ]);
    assert_eq!(
        p.route(&Method::GET, "/b").labels(),
        r#"rt_route="GET /books/{id}""#
    );
    assert_eq!(
        p.route(&Method::GET, "/q").labels(),
        r#"rt_route="a\"b\\c\nd""#
    );
}

// === classification ===

fn classes(cs: Vec<PClass>) -> Arc<Route> {
    let p = profile(vec![PRoute {
        response_classes: cs,
        ..route("r", path("/.*"))
    }]);
    p.route(&Method::GET, "/").clone()
}

#[test]
fn first_matching_class_decides() {
    let r = classes(vec![
        class(status(500, 503), false),
        class(status(500, 599), true),
        class(status(200, 299), true),
    ]);
    assert_eq!(r.classify(code(502), false, None), Class::Success);
    assert_eq!(r.classify(code(504), false, None), Class::Failure);
    assert_eq!(r.classify(code(200), false, None), Class::Failure);
    // No class matches: the default rule.
    assert_eq!(r.classify(code(404), false, None), Class::Success);
    assert_eq!(r.classify(code(302), false, None), Class::Success);
}

#[test]
fn status_ranges_with_one_bound_are_open() {
    let r = classes(vec![class(status(400, 0), true)]);
    assert_eq!(r.classify(code(399), false, None), Class::Success);
    assert_eq!(r.classify(code(400), false, None), Class::Failure);
    assert_eq!(r.classify(code(999), false, None), Class::Failure);
    let r = classes(vec![class(status(0, 299), true)]);
    assert_eq!(r.classify(code(100), false, None), Class::Failure);
    assert_eq!(r.classify(code(299), false, None), Class::Failure);
    // 300 is past the class, and 503 falls to the default rule.
    assert_eq!(r.classify(code(300), false, None), Class::Success);
    assert_eq!(r.classify(code(503), false, None), Class::Failure);
}

#[test]
fn response_conditions_nest() {
    let r = classes(vec![
        // Anything but 2xx and 404 is a failure...
        class(
            rsp_not(rsp_any(vec![status(200, 299), status(404, 404)])),
            true,
        ),
        // ...and within 2xx, 204 and 206 too.
        class(
            rsp_all(vec![
                status(200, 299),
                rsp_any(vec![status(204, 204), status(206, 206)]),
            ]),
            true,
        ),
    ]);
    assert_eq!(r.classify(code(200), false, None), Class::Success);
    assert_eq!(r.classify(code(404), false, None), Class::Success);
    assert_eq!(r.classify(code(204), false, None), Class::Failure);
    assert_eq!(r.classify(code(206), false, None), Class::Failure);
    assert_eq!(r.classify(code(403), false, None), Class::Failure);
    assert_eq!(r.classify(code(301), false, None), Class::Failure);
}

#[test]
fn unmatched_responses_fall_back_to_the_default_classifier() {
    let r = classes(vec![class(status(404, 404), true)]);
    for (s, grpc, g) in [
        (200, false, None),
        (500, false, None),
        (200, true, Some(0)),
        (200, true, Some(14)),
        (200, true, None),
        (503, true, None),
    ] {
        assert_eq!(
            r.classify(code(s), grpc, g),
            classify::classify(code(s), grpc, g),
            "status {s} grpc {grpc} grpc-status {g:?}"
        );
    }
    assert_eq!(r.classify(code(200), true, Some(14)), Class::Failure);
    // A class that matches decides even for gRPC.
    assert_eq!(r.classify(code(404), true, Some(0)), Class::Failure);
    // The default route classifies by the default rule alone.
    let p = profile(vec![]);
    let d = p.route(&Method::GET, "/");
    assert_eq!(d.classify(code(503), false, None), Class::Failure);
    assert_eq!(d.classify(code(200), true, Some(0)), Class::Success);
    assert_eq!(d.classify(code(200), true, Some(2)), Class::Failure);
}

#[test]
fn invalid_classes_are_dropped() {
    let r = classes(vec![
        PClass {
            condition: None,
            is_failure: true,
        },
        class(PRsp { r#match: None }, true),
        class(status(600, 500), true),
        class(status(42, 0), true),
        class(
            rsp_any(vec![status(200, 200), PRsp { r#match: None }]),
            true,
        ),
        class(status(201, 201), true),
    ]);
    assert_eq!(r.classes().len(), 1);
    assert!(r.classes()[0].is_failure());
    assert_eq!(r.classify(code(200), false, None), Class::Success);
    assert_eq!(r.classify(code(201), false, None), Class::Failure);
}

// === budget ===

fn budget_of(ratio: f32, min: u32, ttl_ms: u64) -> Arc<Budget> {
    Profile::from_proto(
        &DestinationProfile {
            retry_budget: Some(RetryBudget {
                retry_ratio: ratio,
                min_retries_per_second: min,
                ttl_ms,
            }),
            ..Default::default()
        },
        80,
    )
    .budget()
    .clone()
}

/// Drains a budget: how many retries it allows right now.
fn drain(b: &Budget) -> u32 {
    let mut n = 0;
    while b.try_withdraw() {
        n += 1;
        assert!(n <= 1_000_000, "the budget never runs out");
    }
    n
}

#[test]
fn budget_arithmetic() {
    let b = Budget::new(0.2, 10, Duration::from_secs(10));
    assert_eq!((b.deposit_amount(), b.cost(), b.reserve()), (1, 5, 500));
    let b = Budget::new(0.25, 1, Duration::from_secs(1));
    assert_eq!((b.deposit_amount(), b.cost(), b.reserve()), (1, 4, 4));
    let b = Budget::new(0.0, 3, Duration::from_secs(2));
    assert_eq!((b.deposit_amount(), b.cost(), b.reserve()), (0, 1, 6));
    let b = Budget::new(2.5, 1, Duration::from_secs(1));
    assert_eq!(
        (b.deposit_amount(), b.cost(), b.reserve()),
        (1000, 400, 400)
    );
    // A tiny ratio is held at the largest cost, and nothing overflows.
    let b = Budget::new(1e-30, u32::MAX, Duration::from_secs(60));
    assert_eq!(b.cost(), 1_000_000);
    assert_eq!(b.reserve(), i64::from(u32::MAX) * 60 * 1_000_000);
}

#[tokio::test(start_paused = true)]
async fn budget_allows_ratio_of_requests_plus_the_reserve() {
    // 0.2, 10/s, 10s: a deposit is 1 token, a retry 5, the reserve 10 × 10 × 5 = 500.
    let b = budget_of(0.2, 10, 10_000);
    // 1000 requests over one second, every one of which fails and asks for a retry:
    // (500 + 1000) / 5 = 300 retries, the first 100 from the reserve.
    let mut retried = 0;
    for i in 0..1000 {
        b.deposit();
        if b.try_withdraw() {
            retried += 1;
        }
        if i == 99 {
            assert_eq!(retried, 100, "the reserve covers the first 100 at once");
        }
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert_eq!(retried, 300);
    assert_eq!(drain(&b), 0);
}

#[tokio::test(start_paused = true)]
async fn budget_refills_as_the_window_slides() {
    let b = budget_of(0.2, 10, 10_000);
    // At t=0: 1000 deposits, and all 300 retries taken.
    for _ in 0..1000 {
        b.deposit();
    }
    assert_eq!(drain(&b), 300);
    // The slot of t=0 counts until t=10s (slots are 1s).
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert_eq!(drain(&b), 0);
    // At 10s it lapses, deposits and withdrawals alike: the reserve is whole again.
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(drain(&b), 100);

    // Slot by slot: 500 deposits at 10s and at 15s; retries at 20s see the second half.
    tokio::time::advance(Duration::from_secs(10)).await; // t = 20s, all clear
    assert_eq!(drain(&b), 100);
    tokio::time::advance(Duration::from_secs(10)).await; // t = 30s
    for _ in 0..500 {
        b.deposit();
    }
    tokio::time::advance(Duration::from_secs(5)).await; // t = 35s
    for _ in 0..500 {
        b.deposit();
    }
    tokio::time::advance(Duration::from_secs(5)).await; // t = 40s: the 30s slot lapsed
    assert_eq!(drain(&b), (500 + 500) / 5);
    // Long idle: everything lapses, nothing lingers.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(drain(&b), 100);
}

#[tokio::test(start_paused = true)]
async fn budget_ratio_zero_is_the_reserve_alone() {
    let b = budget_of(0.0, 2, 1_000);
    for _ in 0..1000 {
        b.deposit();
    }
    assert_eq!(drain(&b), 2);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(drain(&b), 2);
}

#[tokio::test(start_paused = true)]
async fn budget_ratio_above_one() {
    // 2.5: each request buys 1000 tokens, a retry costs 400: 2.5 retries a request.
    let b = budget_of(2.5, 0, 1_000);
    for _ in 0..10 {
        b.deposit();
    }
    assert_eq!(drain(&b), 25);
}

#[tokio::test(start_paused = true)]
async fn invalid_budgets_allow_nothing() {
    for (ratio, ttl_ms) in [
        (-0.1, 10_000),
        (1000.5, 10_000),
        (f32::NAN, 10_000),
        (f32::INFINITY, 10_000),
        (0.2, 999),
        (0.2, 60_001),
        (0.2, 0),
    ] {
        let b = budget_of(ratio, 10, ttl_ms);
        assert!(!b.allows_retries());
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(drain(&b), 0, "ratio {ratio} ttl {ttl_ms}ms");
        assert!(Budget::try_new(ratio, 10, Duration::from_millis(ttl_ms)).is_err());
    }
    assert!(!Budget::none().try_withdraw());
    // The bounds themselves are valid.
    assert!(Budget::try_new(1000.0, 0, Duration::from_secs(60)).is_ok());
    assert!(Budget::try_new(0.0, 0, Duration::from_secs(1)).is_ok());
}

#[tokio::test(start_paused = true)]
async fn missing_budget_is_linkerds_default() {
    let b = Profile::default().budget().clone();
    assert_eq!((b.deposit_amount(), b.cost(), b.reserve()), (1, 5, 500));
    assert_eq!(drain(&b), 100);
}

#[test]
fn budget_is_shared_across_threads() {
    let b = Arc::new(Budget::new(0.5, 0, Duration::from_secs(10)));
    std::thread::scope(|s| {
        for _ in 0..4 {
            let b = b.clone();
            s.spawn(move || {
                for _ in 0..1000 {
                    b.deposit();
                }
            });
        }
    });
    // 4000 deposits at 2 tokens a retry; none lapses within the 10s window.
    assert_eq!(drain(&b), 2000);
}

// === split ===

fn split(dsts: &[(&str, u32)], port: u16) -> Option<Split> {
    let overrides: Vec<_> = dsts
        .iter()
        .map(|(a, w)| WeightedDst {
            authority: a.to_string(),
            weight: *w,
        })
        .collect();
    Split::from_proto(&overrides, port)
}

#[test]
fn split_follows_the_weights() {
    let s = split(
        &[
            ("a.ns.svc.cluster.local", 9000),
            ("b.ns.svc.cluster.local:9090", 1000),
        ],
        8080,
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let mut a = 0u32;
    for _ in 0..10_000 {
        match s.pick(&mut rng).as_ref() {
            "a.ns.svc.cluster.local:8080" => a += 1,
            "b.ns.svc.cluster.local:9090" => {}
            other => panic!("unexpected authority {other}"),
        }
    }
    assert!((8_800..=9_200).contains(&a), "{a} of 10000 picks went to a");
}

#[test]
fn split_ignores_zero_weights_and_bad_authorities() {
    let s = split(&[("zero:80", 0), ("bad authority", 5), ("only", 3)], 80).unwrap();
    let targets: Vec<_> = s.targets().map(|(a, w)| (a.to_string(), w)).collect();
    assert_eq!(targets, [("only:80".to_string(), 3)]);
    let mut rng = StdRng::seed_from_u64(1);
    assert!((0..100).all(|_| s.pick(&mut rng).as_ref() == "only:80"));
    assert!(split(&[("a", 0)], 80).is_none());
    assert!(split(&[], 80).is_none());
    // Through the profile, with the destination's port.
    let p = Profile::from_proto(
        &DestinationProfile {
            dst_overrides: vec![WeightedDst {
                authority: "[2001:db8::1]".into(),
                weight: 10_000,
            }],
            ..Default::default()
        },
        7000,
    );
    assert!(p.has_routes_or_split());
    let targets: Vec<_> = p
        .split()
        .unwrap()
        .targets()
        .map(|(a, _)| a.to_string())
        .collect();
    assert_eq!(targets, ["[2001:db8::1]:7000"]);
}

// === backoff ===

#[test]
fn backoff_is_bounded_full_jitter() {
    let mut rng = StdRng::seed_from_u64(7);
    for attempt in [0u32, 1, 2, 3, 4, 5, 10, 31, 32, u32::MAX] {
        let ceiling = Duration::from_millis((25u64 << attempt.min(16)).min(250));
        let mut max = Duration::ZERO;
        let mut min = Duration::MAX;
        for _ in 0..1000 {
            let d = backoff(attempt, &mut rng);
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
            max = max.max(d);
            min = min.min(d);
        }
        // Full jitter spans the whole range.
        assert!(max > ceiling.mul_f64(0.9), "attempt {attempt}: max {max:?}");
        assert!(min < ceiling.mul_f64(0.1), "attempt {attempt}: min {min:?}");
    }
    assert!(backoff(0, &mut rng) <= BACKOFF_BASE);
    assert!(backoff(100, &mut rng) <= BACKOFF_MAX);
}
