//! The logical layer alone, over a fake inner service that answers from a script and
//! records what each attempt reached it with. Time is paused, so backoffs and
//! timeouts pass instantly and exactly.

use super::*;
use crate::http::{ProxyBody, Replay};
use mesh_api::destination::{request_match, DestinationProfile, RequestMatch, Route as ProtoRoute};
use std::{
    net::SocketAddr,
    sync::{atomic::AtomicUsize, atomic::Ordering::SeqCst, Mutex},
};

/// What the fake inner service does with attempt `n` (from 0).
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Never,
}

struct Fixture {
    metrics: Metrics,
    svc: Logical<tower::util::BoxCloneService<Request<ReqBody>, Response<MeteredBody>, Infallible>>,
    attempts: Arc<AtomicUsize>,
    /// The endpoint each attempt was told to avoid.
    avoided: Arc<Mutex<Vec<Option<SocketAddr>>>>,
}

fn fixture(script: &'static [Answer]) -> Fixture {
    let metrics = Metrics::new();
    let attempts = Arc::new(AtomicUsize::new(0));
    let avoided = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (attempts.clone(), avoided.clone());
    let inner = tower::service_fn(move |req: Request<ReqBody>| {
        let n = count.fetch_add(1, SeqCst);
        seen.lock()
            .unwrap()
            .push(req.extensions().get::<Target>().and_then(|t| t.avoid));
        let answer = script[n.min(script.len() - 1)];
        async move {
            match answer {
                Answer::Never => std::future::pending().await,
                Answer::Status(s) => {
                    let mut rsp = Response::new(MeteredBody::unmetered(ProxyBody::empty()));
                    *rsp.status_mut() = http::StatusCode::from_u16(s).unwrap();
                    // As the balancer says which endpoint answered: attempt n's.
                    let endpoint = SocketAddr::from(([198, 18, 0, 1 + n as u8], 80));
                    rsp.extensions_mut().insert(Picked(endpoint));
                    Ok::<_, Infallible>(rsp)
                }
            }
        }
    });
    let svc = Logical::new(tower::util::BoxCloneService::new(inner), metrics.clone());
    Fixture {
        metrics,
        svc,
        attempts,
        avoided,
    }
}

/// A profile for `web` with one route, `flaky`, for every path.
fn profile(retryable: bool, timeout_ms: u64) -> Arc<DstProfile> {
    let route = ProtoRoute {
        name: "flaky".into(),
        condition: Some(RequestMatch {
            r#match: Some(request_match::Match::PathRegex("/.*".into())),
        }),
        is_retryable: retryable,
        timeout_ms,
        ..Default::default()
    };
    let proto = DestinationProfile {
        routes: vec![route],
        ..Default::default()
    };
    Arc::new(DstProfile {
        name: "web.test.svc.cluster.local:80".into(),
        profile: profile::Profile::from_proto(&proto, 80),
    })
}

fn request(profile: Option<Arc<DstProfile>>) -> Request<ReqBody> {
    let mut req = Request::new(ReqBody::from(Replay::default()));
    *req.uri_mut() = "/books".parse().unwrap();
    let mut t = Target::new(SocketAddr::from(([198, 18, 0, 9], 80)));
    t.profile = profile;
    req.extensions_mut().insert(t);
    req
}

/// The sum of a family's series whose labels contain all of `labels`.
fn sum(metrics: &Metrics, family: &str, labels: &[&str]) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(start_paused = true)]
async fn without_a_profile_a_request_passes_once_uncounted() {
    let mut f = fixture(&[Answer::Status(500)]);
    let rsp = f.svc.call(request(None)).await.unwrap();
    assert_eq!(rsp.status(), 500);
    assert_eq!(f.attempts.load(SeqCst), 1);
    assert_eq!(sum(&f.metrics, "route_request_total", &[]), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_is_retried_below_avoiding_the_endpoint_that_failed() {
    let mut f = fixture(&[Answer::Status(500), Answer::Status(200)]);
    let mut rsp = f.svc.call(request(Some(profile(true, 0)))).await.unwrap();
    assert_eq!(rsp.status(), 200);
    rsp.body_mut().finish_discarded();
    drop(rsp);
    assert_eq!(f.attempts.load(SeqCst), 2);
    // The retry was told to avoid attempt 0's endpoint.
    let first = SocketAddr::from(([198, 18, 0, 1], 80));
    assert_eq!(*f.avoided.lock().unwrap(), vec![None, Some(first)]);
    let rt = r#"rt_route="flaky""#;
    assert_eq!(sum(&f.metrics, "route_request_total", &[rt]), 1);
    assert_eq!(sum(&f.metrics, "route_actual_request_total", &[rt]), 2);
    assert_eq!(
        sum(
            &f.metrics,
            "route_actual_response_total",
            &[rt, r#"status_code="500""#]
        ),
        1
    );
    assert_eq!(sum(&f.metrics, "route_retryable_total", &[rt]), 1);
}

#[tokio::test(start_paused = true)]
async fn a_route_that_is_not_retryable_is_tried_once() {
    let mut f = fixture(&[Answer::Status(500), Answer::Status(200)]);
    let rsp = f.svc.call(request(Some(profile(false, 0)))).await.unwrap();
    assert_eq!(rsp.status(), 500);
    assert_eq!(f.attempts.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_route_timeout_ends_the_request_and_its_attempt_is_recorded() {
    let mut f = fixture(&[Answer::Never]);
    let start = Instant::now();
    let rsp = f.svc.call(request(Some(profile(true, 250)))).await.unwrap();
    assert_eq!(rsp.status(), 504);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    let rt = r#"rt_route="flaky""#;
    // The attempt that never answered ended in exactly one recorded outcome.
    assert_eq!(
        sum(
            &f.metrics,
            "route_actual_response_total",
            &[rt, r#"error="timeout""#]
        ),
        1
    );
}
