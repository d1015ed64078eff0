//! The balancer layer alone: a real pool connecting to real loopback sockets, and a
//! fake inner service that records the target each request reached it with.

use super::*;
use crate::{discover::Endpoints, errors::Decided, http::Replay, metrics::Direction};
use std::{sync::Mutex, time::Duration};
use tokio::net::TcpListener;

/// What the inner service saw of one request.
#[derive(Debug)]
struct Seen {
    addr: SocketAddr,
    leased: bool,
    failed: Option<String>,
}

struct Fixture {
    _proxy: Arc<crate::Proxy>,
    svc: Balance<tower::util::BoxCloneService<Request<ReqBody>, Response<MeteredBody>, Infallible>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn fixture() -> Fixture {
    let proxy = crate::test_proxy().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let inner = tower::service_fn(move |req: Request<ReqBody>| {
        let t = req.extensions().get::<Target>().expect("routed");
        record.lock().unwrap().push(Seen {
            addr: t.addr,
            leased: t.lease.as_ref().is_some_and(|l| l.is_leased()),
            failed: t.failed.as_ref().map(|f| crate::errors::chain(f)),
        });
        std::future::ready(Ok(Response::new(MeteredBody::unmetered(
            crate::http::ProxyBody::empty(),
        ))))
    });
    let pool = crate::http::client::PoolHandle::new(proxy.pool(Direction::Outbound).clone());
    let svc = Balance::new(tower::util::BoxCloneService::new(inner), Arc::new(pool));
    Fixture {
        _proxy: proxy,
        svc,
        seen,
    }
}

fn request(dst: &Arc<Endpoints>, avoid: Option<SocketAddr>) -> Request<ReqBody> {
    let mut req = Request::new(ReqBody::from(Replay::default()));
    let mut t = Target::new(SocketAddr::from(([0, 0, 0, 0], 80)));
    t.endpoints = Some(dst.clone());
    t.avoid = avoid;
    req.extensions_mut().insert(t);
    req
}

/// A port that refuses connections (bound, not listening), kept ours while held.
fn refusing() -> (SocketAddr, socket2::Socket) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    (s.local_addr().unwrap().as_socket().unwrap(), s)
}

#[tokio::test]
async fn a_refused_connection_goes_to_another_endpoint_before_anything_is_sent() {
    let mut f = fixture().await;
    let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live_addr = live.local_addr().unwrap();
    let (dead, _held) = refusing();
    let dst = Endpoints::for_test("web.test.svc.cluster.local:80", &[dead, live_addr]);
    // The first pick avoids the live endpoint: it lands on the dead one.
    let rsp = f.svc.call(request(&dst, Some(live_addr))).await.unwrap();
    assert_eq!(rsp.extensions().get::<Picked>(), Some(&Picked(live_addr)));
    let seen = f.seen.lock().unwrap().pop().unwrap();
    assert_eq!(seen.addr, live_addr);
    assert!(seen.leased, "the connection comes leased");
    assert_eq!(seen.failed, None);
    // The dead endpoint is penalized, and the request's claim on the live one ended
    // with its response.
    let now = tokio::time::Instant::now();
    assert!(dst.endpoint(dead).unwrap().estimate(now) > Duration::from_secs(4));
    assert_eq!(dst.endpoint(live_addr).unwrap().pending(), 0);
}

#[tokio::test]
async fn with_nowhere_else_to_go_the_failure_goes_down_to_be_counted() {
    let mut f = fixture().await;
    let (dead, _held) = refusing();
    let dst = Endpoints::for_test("web.test.svc.cluster.local:80", &[dead]);
    let rsp = f.svc.call(request(&dst, None)).await.unwrap();
    assert_eq!(rsp.extensions().get::<Picked>(), Some(&Picked(dead)));
    let seen = f.seen.lock().unwrap().pop().unwrap();
    assert_eq!(seen.addr, dead, "labelled with the endpoint that failed");
    assert!(!seen.leased);
    let failed = seen.failed.expect("a failure");
    assert!(
        failed.contains(&format!("connect to {dead} failed")),
        "{failed}"
    );

    // No endpoints at all: that failure goes down too.
    let empty = Endpoints::for_test("none.test.svc.cluster.local:80", &[]);
    f.svc.call(request(&empty, None)).await.unwrap();
    let seen = f.seen.lock().unwrap().pop().unwrap();
    assert_eq!(
        seen.failed.as_deref(),
        Some("no endpoints for none.test.svc.cluster.local:80")
    );
}

#[tokio::test]
async fn a_retry_avoids_the_endpoint_that_failed_unless_it_is_the_only_one() {
    let mut f = fixture().await;
    let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a, b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let dst = Endpoints::for_test("web.test.svc.cluster.local:80", &[a, b]);
    for _ in 0..20 {
        let rsp = f.svc.call(request(&dst, Some(a))).await.unwrap();
        assert_eq!(rsp.extensions().get::<Picked>(), Some(&Picked(b)));
    }
    let only = Endpoints::for_test("one.test.svc.cluster.local:80", &[a]);
    let rsp = f.svc.call(request(&only, Some(a))).await.unwrap();
    assert_eq!(rsp.extensions().get::<Picked>(), Some(&Picked(a)));
    assert!(f
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|s| s.leased && s.failed.is_none()));
}

#[tokio::test]
async fn requests_without_a_known_destination_pass_through_untouched() {
    let mut f = fixture().await;
    let addr = SocketAddr::from(([127, 0, 0, 1], 9));
    let mut req = Request::new(ReqBody::from(Replay::default()));
    req.extensions_mut().insert(Target::new(addr));
    let rsp = f.svc.call(req).await.unwrap();
    assert_eq!(rsp.extensions().get::<Picked>(), None);
    let seen = f.seen.lock().unwrap().pop().unwrap();
    assert_eq!((seen.addr, seen.leased, seen.failed), (addr, false, None));
    // A failure decided above passes through as it is.
    let mut req = Request::new(ReqBody::from(Replay::default()));
    let mut t = Target::new(addr);
    t.failed = Some(Decided::new(crate::errors::LoopDetected { addr }));
    req.extensions_mut().insert(t);
    f.svc.call(req).await.unwrap();
    let seen = f.seen.lock().unwrap().pop().unwrap();
    assert!(seen.failed.unwrap().contains("own listener"));
}
