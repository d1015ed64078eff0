//! The tap layer alone, over a fake inner service: what a stream sees of the requests
//! its filter matches, and what nobody tapping costs.

use super::*;
use crate::{
    config::TapConfig,
    http::{ProxyBody, Replay},
    metrics::{Direction, Metrics},
    profile::Profile,
};
use http::HeaderName;
use http_body_util::BodyExt;
use mesh_api::{
    destination::{request_match, DestinationProfile, RequestMatch, Route as ProtoRoute},
    tap::{
        observe_request::{
            r#match::{self as m, http::Match as HttpMatch, string_match},
            Extract, Match,
        },
        tap_event::{http::response_end::End, http::Event, ProxyDirection},
        ObserveRequest, TapEvent,
    },
};
use std::{net::SocketAddr, sync::Mutex, time::Duration};

const PEER: &str = "web.default.serviceaccount.identity.mesh.cluster.local";
const CLIENT: ([u8; 4], u16) = ([127, 0, 0, 1], 40000);
const ENDPOINT: ([u8; 4], u16) = ([198, 18, 0, 9], 8080);

struct Fixture {
    registry: Arc<Registry>,
    metrics: Metrics,
    svc: Tap<tower::util::BoxCloneService<Request<ReqBody>, Response<MeteredBody>, Infallible>>,
    /// The requests the inner service got: their headers.
    seen: Arc<Mutex<Vec<http::HeaderMap>>>,
}

/// A tap layer over a service that answers `200` with a `set-cookie`, or for a path
/// ending in `/grpc` a trailers-only gRPC response with status 7.
fn fixture(max_rps: u32) -> Fixture {
    let metrics = Metrics::new();
    metrics.tap().enable();
    let config = TapConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        client_name: "mesh-tap.mesh-system.serviceaccount.identity.mesh.cluster.local".into(),
        redact_headers: vec![HeaderName::from_static("x-api-key")],
        max_rps,
    };
    let registry = Arc::new(Registry::new(Some(&config), metrics.clone()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let inner = tower::service_fn(move |req: Request<ReqBody>| {
        record.lock().unwrap().push(req.headers().clone());
        let mut rsp = Response::new(MeteredBody::unmetered(ProxyBody::empty()));
        if req.uri().path().ends_with("/grpc") {
            rsp.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            rsp.headers_mut()
                .insert("grpc-status", "7".parse().unwrap());
        } else {
            rsp.headers_mut()
                .insert("set-cookie", "session=s3cret".parse().unwrap());
            rsp.headers_mut()
                .insert("x-app", "visible".parse().unwrap());
        }
        std::future::ready(Ok::<_, Infallible>(rsp))
    });
    let conn = Arc::new(ConnCtx {
        direction: Direction::Outbound,
        orig_dst: None,
        client: CLIENT.into(),
        destination: None,
        client_id: None,
        policy: None,
    });
    let tap = Arc::new(TapConn {
        registry: registry.clone(),
        conn,
    });
    Fixture {
        registry,
        metrics,
        svc: Tap::new(tower::util::BoxCloneService::new(inner), tap),
        seen,
    }
}

/// `POST http://web.test:8080<path>?token=1` with sensitive and plain headers, routed
/// to an endpoint with labels and a peer identity, on route `vote`.
fn request(path: &str) -> Request<ReqBody> {
    let mut req = Request::post(format!("http://web.test:8080{path}?token=1"))
        .header("authorization", "Bearer s3cret")
        .header("cookie", "session=s3cret")
        .header("x-api-key", "s3cret")
        .header("x-visible", "yes")
        .body(ReqBody::from(Replay::default()))
        .unwrap();
    let mut t = Target::new(ENDPOINT.into());
    t.peer = Some(PEER.into());
    t.labels = Some(r#"dst_namespace="default",dst_pod="web-0""#.into());
    let profile = Profile::from_proto(
        &DestinationProfile {
            routes: vec![ProtoRoute {
                name: "vote".into(),
                condition: Some(RequestMatch {
                    r#match: Some(request_match::Match::PathRegex("/api/.*".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
        8080,
    );
    t.route = Some(profile.route(req.method(), req.uri().path()).clone());
    req.extensions_mut().insert(t);
    req
}

fn path_prefix(p: &str) -> Option<Match> {
    Some(Match {
        r#match: Some(m::Match::Http(m::Http {
            r#match: Some(HttpMatch::Path(m::StringMatch {
                r#match: Some(string_match::Match::Prefix(p.into())),
            })),
        })),
    })
}

fn observe(limit: u32, r#match: Option<Match>, headers: bool) -> ObserveRequest {
    ObserveRequest {
        limit,
        r#match,
        extract: headers.then_some(Extract { headers: true }),
        max_rps: 0,
    }
}

/// Sends `req` through the layer and reads the response to its end.
async fn send(svc: &mut Tap<impl Stack>, req: Request<ReqBody>) {
    let rsp = svc.call(req).await.unwrap();
    rsp.into_body().collect().await.unwrap();
}

fn event(e: &TapEvent) -> &Event {
    e.http.as_ref().unwrap().event.as_ref().unwrap()
}

fn header<'a>(headers: &'a [mesh_api::tap::Header], name: &str) -> &'a [u8] {
    &headers
        .iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .value
}

fn metric(metrics: &Metrics, name: &str) -> String {
    let text = metrics.encode();
    text.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_string()
}

#[tokio::test]
async fn with_nobody_tapping_a_request_goes_through_as_it_came() {
    let mut f = fixture(100);
    assert!(f.registry.is_idle());
    // The layer's future is the inner service's own: nothing boxed, nothing added.
    let fut = f.svc.call(request("/api/vote"));
    assert!(
        matches!(fut, Either::Left(_)),
        "an idle tap must pass through"
    );
    let rsp = fut.await.unwrap();
    assert!(!rsp.body().is_tapped());
    let seen = f.seen.lock().unwrap().pop().unwrap();
    assert_eq!(
        seen["authorization"], "Bearer s3cret",
        "the request is untouched"
    );
}

#[tokio::test]
async fn a_matching_stream_sees_request_response_and_end_and_others_nothing() {
    let mut f = fixture(100);
    let mut tapping = f
        .registry
        .subscribe(observe(10, path_prefix("/api"), true))
        .unwrap();
    let mut elsewhere = f
        .registry
        .subscribe(observe(10, path_prefix("/other"), true))
        .unwrap();
    send(&mut f.svc, request("/api/vote")).await;

    let init = tapping.try_next().expect("request_init");
    assert_eq!(init.source, Some(SocketAddr::from(CLIENT).into()));
    assert_eq!(init.destination, Some(SocketAddr::from(ENDPOINT).into()));
    assert_eq!(init.proxy_direction, ProxyDirection::Outbound as i32);
    assert!(init.tls);
    let dst = init.destination_meta.as_ref().unwrap();
    assert_eq!(dst.identity, PEER);
    assert_eq!(dst.labels["pod"], "web-0");
    assert_eq!(dst.labels["namespace"], "default");
    assert_eq!(init.route_meta.as_ref().unwrap().labels["route"], "vote");
    assert_eq!(init.authorization, None, "no policy, no decision");
    let Event::RequestInit(req) = event(&init) else {
        panic!("{init:?}")
    };
    assert_eq!(
        (&*req.method, &*req.scheme, &*req.authority, &*req.path),
        ("POST", "http", "web.test:8080", "/api/vote"),
        "the path without its query"
    );
    for secret in ["authorization", "cookie", "x-api-key"] {
        assert_eq!(header(&req.headers, secret), b"[redacted]", "{secret}");
    }
    assert_eq!(header(&req.headers, "x-visible"), b"yes");
    // The request itself was not changed by the redaction.
    assert_eq!(f.seen.lock().unwrap()[0]["x-api-key"], "s3cret");

    let rsp = tapping.try_next().expect("response_init");
    let Event::ResponseInit(r) = event(&rsp) else {
        panic!("{rsp:?}")
    };
    let id = req.id;
    assert_eq!(r.id, id);
    assert_eq!(r.http_status, 200);
    assert!(r.since_request_init.is_some());
    assert_eq!(header(&r.headers, "set-cookie"), b"[redacted]");
    assert_eq!(header(&r.headers, "x-app"), b"visible");
    assert_eq!(r.proxy_error, "");

    let end = tapping.try_next().expect("response_end");
    let Event::ResponseEnd(e) = event(&end) else {
        panic!("{end:?}")
    };
    assert_eq!(e.id, id);
    assert_eq!(e.response_bytes, 0);
    assert_eq!(e.end, None, "a clean end with no gRPC status");
    assert!(e.since_request_init.is_some() && e.since_response_init.is_some());

    // A trailers-only gRPC response: its status ends the request.
    send(&mut f.svc, request("/api/grpc")).await;
    let events: Vec<TapEvent> = std::iter::from_fn(|| tapping.try_next().ok()).collect();
    assert_eq!(events.len(), 3);
    let Event::ResponseEnd(e) = event(&events[2]) else {
        panic!("{events:?}")
    };
    assert_eq!(e.end, Some(End::GrpcStatusCode(7)));
    assert_ne!(e.id, id, "each request has its own id");

    assert!(
        elsewhere.try_next().is_err(),
        "the other filter matched nothing"
    );
}

#[tokio::test]
async fn events_carry_the_inbound_policys_decision() {
    let mut f = fixture(100);
    let mut tapping = f.registry.subscribe(observe(10, None, false)).unwrap();
    let meta = |kind: &str, name: &str| crate::policy::Meta::new("policy.mesh.rs", kind, name);
    let mut req = request("/api/vote");
    req.extensions_mut().get_mut::<Target>().unwrap().authz =
        Some(crate::policy::enforce::Decision {
            server: meta("server", "voting"),
            route: Some(meta("httproute", "vote")),
            authz: Some(meta("authorizationpolicy", "web-only")),
            outcome: crate::policy::enforce::Outcome::Allow,
        });
    send(&mut f.svc, req).await;
    let init = tapping.try_next().expect("request_init");
    let a = init.authorization.expect("the decision");
    assert_eq!(a.outcome, "allow");
    assert_eq!(a.server.unwrap().name, "voting");
    assert_eq!(a.route.unwrap().kind, "httproute");
    let authz = a.authz.unwrap();
    assert_eq!(
        (&*authz.group, &*authz.kind, &*authz.name),
        ("policy.mesh.rs", "authorizationpolicy", "web-only")
    );
}

#[tokio::test]
async fn without_extract_events_carry_no_headers() {
    let mut f = fixture(100);
    let mut s = f.registry.subscribe(observe(10, None, false)).unwrap();
    send(&mut f.svc, request("/api/vote")).await;
    let Event::RequestInit(req) = event(&s.try_next().unwrap()).clone() else {
        panic!()
    };
    assert!(req.headers.is_empty());
}

#[tokio::test]
async fn a_full_stream_loses_events_counted_and_never_blocks_traffic() {
    let mut f = fixture(1000);
    let mut s = f.registry.subscribe(observe(1000, None, false)).unwrap();
    // Nobody reads: three events per request, the buffer takes what fits.
    for _ in 0..100 {
        send(&mut f.svc, request("/api/vote")).await;
    }
    let dropped = 300 - crate::tap::STREAM_BUFFER;
    assert_eq!(
        metric(&f.metrics, "tap_events_dropped_total "),
        format!("tap_events_dropped_total {dropped}")
    );
    let kept = std::iter::from_fn(|| s.try_next().ok()).count();
    assert_eq!(kept, crate::tap::STREAM_BUFFER);
}

#[tokio::test]
async fn the_limit_ends_the_stream_once_its_requests_end() {
    let mut f = fixture(100);
    let mut s = f.registry.subscribe(observe(2, None, false)).unwrap();
    assert_eq!(metric(&f.metrics, "tap_subscribers "), "tap_subscribers 1");
    send(&mut f.svc, request("/api/vote")).await;
    // The second request is the last: the stream leaves the registry with it.
    let rsp = f.svc.call(request("/api/vote")).await.unwrap();
    assert!(f.registry.is_idle());
    assert_eq!(metric(&f.metrics, "tap_subscribers "), "tap_subscribers 0");
    // A third request is not tapped.
    let third = f.svc.call(request("/api/vote"));
    assert!(matches!(third, Either::Left(_)));
    // The stream ends after the second request's end, not before.
    for _ in 0..5 {
        assert!(s.next().await.is_some());
    }
    rsp.into_body().collect().await.unwrap();
    let Some(end) = s.next().await else {
        panic!("the last request's end is sent")
    };
    assert!(matches!(event(&end), Event::ResponseEnd(_)));
    assert!(s.next().await.is_none(), "then the stream ends");
}

#[tokio::test]
async fn a_response_never_read_to_its_end_ends_cancelled() {
    let mut f = fixture(100);
    let mut s = f.registry.subscribe(observe(10, None, false)).unwrap();
    let fut = f.svc.call(request("/api/vote"));
    // The client went away before the response: the future is dropped.
    drop(fut);
    let events: Vec<TapEvent> = std::iter::from_fn(|| s.try_next().ok()).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    let Event::ResponseEnd(e) = event(&events[1]) else {
        panic!("{events:?}")
    };
    assert_eq!(e.end, Some(End::Reset("cancelled".into())));
    assert_eq!(e.since_response_init, None);
}

#[tokio::test(start_paused = true)]
async fn each_stream_taps_at_most_its_rate() {
    let mut f = fixture(2);
    let mut s = f.registry.subscribe(observe(100, None, false)).unwrap();
    for _ in 0..3 {
        send(&mut f.svc, request("/api/vote")).await;
    }
    assert_eq!(std::iter::from_fn(|| s.try_next().ok()).count(), 6);
    assert_eq!(
        metric(&f.metrics, "tap_rate_limited_total "),
        "tap_rate_limited_total 1"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    send(&mut f.svc, request("/api/vote")).await;
    assert_eq!(std::iter::from_fn(|| s.try_next().ok()).count(), 3);
}

#[tokio::test]
async fn a_stream_whose_client_left_is_removed() {
    let f = fixture(100);
    let s = f.registry.subscribe(observe(10, None, false)).unwrap();
    assert!(!f.registry.is_idle());
    drop(s);
    assert!(f.registry.is_idle());
    assert_eq!(metric(&f.metrics, "tap_subscribers "), "tap_subscribers 0");
}

#[tokio::test(start_paused = true)]
async fn the_tap_server_sends_a_streams_events_in_batches() {
    use crate::tap::server::{Events, GATHER};
    use futures_util::Stream as _;
    use std::{pin::Pin, task::Poll};
    let mut f = fixture(100);
    let s = f.registry.subscribe(observe(10, None, false)).unwrap();
    let mut events = Events::new(s);
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    send(&mut f.svc, request("/api/vote")).await;
    // The first request's events are held while others gather...
    assert!(Pin::new(&mut events).poll_next(&mut cx).is_pending());
    send(&mut f.svc, request("/api/list")).await;
    tokio::time::advance(GATHER / 2).await;
    assert!(Pin::new(&mut events).poll_next(&mut cx).is_pending());
    tokio::time::advance(GATHER / 2).await;
    // ...then every event waiting is ready at once, so tonic writes them together.
    let mut batch = Vec::new();
    while let Poll::Ready(Some(Ok(e))) = Pin::new(&mut events).poll_next(&mut cx) {
        batch.push(e);
    }
    assert_eq!(batch.len(), 6, "two requests' three events each");
    assert!(matches!(event(&batch[0]), Event::RequestInit(r) if r.path == "/api/vote"));
    assert!(matches!(event(&batch[3]), Event::RequestInit(r) if r.path == "/api/list"));
    // The next event starts the next batch.
    send(&mut f.svc, request("/api/vote")).await;
    assert!(Pin::new(&mut events).poll_next(&mut cx).is_pending());
    tokio::time::advance(GATHER).await;
    assert!(Pin::new(&mut events).poll_next(&mut cx).is_ready());
}

#[tokio::test]
async fn a_stream_taps_no_more_a_second_than_it_asks_within_the_proxys_cap() {
    let mut f = fixture(100);
    let mut slow = f
        .registry
        .subscribe(ObserveRequest {
            max_rps: 2,
            ..observe(100, None, false)
        })
        .unwrap();
    // Asking for more than the proxy allows gets the proxy's cap.
    let mut greedy = f
        .registry
        .subscribe(ObserveRequest {
            max_rps: 1000,
            ..observe(100, None, false)
        })
        .unwrap();
    for _ in 0..5 {
        send(&mut f.svc, request("/api/vote")).await;
    }
    let count = |s: &mut crate::tap::Subscription| {
        std::iter::from_fn(|| s.try_next().ok())
            .filter(|e| matches!(event(e), Event::RequestInit(_)))
            .count()
    };
    assert_eq!(count(&mut slow), 2, "two requests in this second");
    assert_eq!(count(&mut greedy), 5, "under the cap of 100, every request");
    assert_eq!(
        metric(&f.metrics, "tap_rate_limited_total "),
        "tap_rate_limited_total 3"
    );
}
