//! `pods/portforward`, driven by kube-rs's own `Api::<Pod>::portforward` as
//! `kubectl port-forward` and `mesh` use it: the WebSocket upgrade, the kubelet's
//! channels and initial port frames (kube's client refuses a stream without them), bytes
//! both ways per port, the kubelet's error for a port nothing is registered for, and
//! what the API server refuses before upgrading: a pod that does not exist, SPDY, no
//! ports.

use std::{net::SocketAddr, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use mesh_kube_fake::{pod, FakeKube};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

/// Bounds a failing test; every step takes milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// A TCP server that answers each connection's bytes with `prefix` followed by them,
/// until the client closes its side.
async fn echo(prefix: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0; 1024];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let mut out = prefix.as_bytes().to_vec();
                            out.extend_from_slice(&buf[..n]);
                            if conn.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn read_exactly(stream: &mut (impl tokio::io::AsyncRead + Unpin), n: usize) -> String {
    let mut buf = vec![0; n];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut buf))
        .await
        .expect("bytes arrive in time")
        .expect("read");
    String::from_utf8(buf).unwrap()
}

#[tokio::test]
async fn each_port_reaches_the_address_registered_for_it() {
    let kube = FakeKube::start().await.unwrap();
    kube.apply(pod(
        "mesh-system",
        "controller-0",
        "10.0.0.5",
        "mesh",
        None,
        &[],
    ))
    .unwrap();
    kube.forward_port("mesh-system", "controller-0", 8084, echo("api:").await);
    kube.forward_port("mesh-system", "controller-0", 8088, echo("tap:").await);
    let pods: Api<Pod> = Api::namespaced(kube.client().unwrap(), "mesh-system");

    let mut forward = pods
        .portforward("controller-0", &[8084, 8088])
        .await
        .expect("the upgrade is accepted");
    let mut api = forward.take_stream(8084).unwrap();
    let mut tap = forward.take_stream(8088).unwrap();
    api.write_all(b"hello").await.unwrap();
    tap.write_all(b"world").await.unwrap();
    assert_eq!(read_exactly(&mut api, 9).await, "api:hello");
    assert_eq!(read_exactly(&mut tap, 9).await, "tap:world");
    // A second round on the same streams: the channels stay open.
    api.write_all(b"again").await.unwrap();
    assert_eq!(read_exactly(&mut api, 9).await, "api:again");
    assert_eq!(kube.stats().port_forwards, 1);

    // Closing the client's side of every port ends the forward cleanly.
    drop(api);
    drop(tap);
    tokio::time::timeout(DEADLINE, forward.join())
        .await
        .expect("the forward ends")
        .expect("without error");
}

#[tokio::test]
async fn the_pods_closing_ends_the_stream() {
    let kube = FakeKube::start().await.unwrap();
    kube.apply(pod("shop", "web-0", "10.0.0.6", "web", None, &[]))
        .unwrap();
    // A pod's server that says one thing and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    kube.forward_port("shop", "web-0", 80, listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        conn.write_all(b"bye").await.unwrap();
    });
    let pods: Api<Pod> = Api::namespaced(kube.client().unwrap(), "shop");
    let mut forward = pods.portforward("web-0", &[80]).await.unwrap();
    let mut stream = forward.take_stream(80).unwrap();
    let mut all = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut all))
        .await
        .expect("the stream ends")
        .unwrap();
    assert_eq!(all, "bye");
}

#[tokio::test]
async fn a_port_with_nothing_behind_it_gets_the_kubelets_error() {
    let kube = FakeKube::start().await.unwrap();
    kube.apply(pod("shop", "web-0", "10.0.0.6", "web", None, &[]))
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(kube.client().unwrap(), "shop");

    // Nothing registered.
    let mut forward = pods.portforward("web-0", &[9999]).await.unwrap();
    let error = tokio::time::timeout(DEADLINE, forward.take_error(9999).unwrap())
        .await
        .expect("the error arrives")
        .expect("an error message");
    assert!(
        error.starts_with("error forwarding port 9999 to pod web-0, uid "),
        "{error}"
    );
    assert!(error.contains("connection refused"), "{error}");

    // Registered, but nothing listens there any more.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gone.local_addr().unwrap();
    drop(gone);
    kube.forward_port("shop", "web-0", 8080, addr);
    let mut forward = pods.portforward("web-0", &[8080]).await.unwrap();
    let error = tokio::time::timeout(DEADLINE, forward.take_error(8080).unwrap())
        .await
        .expect("the error arrives")
        .expect("an error message");
    assert!(error.contains(&addr.to_string()), "{error}");

    // Unregistered again: refused again.
    kube.stop_forward("shop", "web-0", 8080);
    let mut forward = pods.portforward("web-0", &[8080]).await.unwrap();
    let error = tokio::time::timeout(DEADLINE, forward.take_error(8080).unwrap())
        .await
        .expect("the error arrives");
    assert!(error.is_some_and(|e| e.contains("127.0.0.1:8080")));
}

#[tokio::test]
async fn what_the_api_server_refuses_is_refused_before_any_upgrade() {
    let kube = FakeKube::start().await.unwrap();
    let client = kube.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let error = pods
        .portforward("nope", &[80])
        .await
        .err()
        .expect("refused");
    let message = error.to_string();
    assert!(message.contains("404"), "{message}");

    // kubectl's SPDY (a POST without a WebSocket upgrade), and no ports.
    kube.apply(pod("shop", "web-0", "10.0.0.6", "web", None, &[]))
        .unwrap();
    for (uri, why) in [
        (
            "/api/v1/namespaces/shop/pods/web-0/portforward?ports=80",
            "over WebSocket (v4.channel.k8s.io) only, not SPDY",
        ),
        (
            "/api/v1/namespaces/shop/pods/web-0/portforward",
            "at least one port must be specified",
        ),
        (
            "/api/v1/namespaces/shop/pods/web-0/portforward?ports=0",
            "invalid port \"0\"",
        ),
    ] {
        let req = http::Request::post(uri).body(Vec::new()).unwrap();
        match client.request_text(req).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 400, "{uri}: {status:?}");
                assert!(status.message.contains(why), "{uri}: {}", status.message);
            }
            other => panic!("{uri}: {other:?}"),
        }
    }
    assert_eq!(kube.stats().port_forwards, 0);
}
