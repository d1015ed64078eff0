//! In-process tests of the whole proxy on loopback: real sockets, real hyper clients
//! and servers, explicit mode (no iptables needed; the pod-level tests cover
//! transparent mode).

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[tokio::test]
async fn http1_proxy_requests_are_forwarded_and_counted() {
    let backend = backend().await;
    let p = proxy(&[]).await;
    let mut c = h1(p.outbound).await;
    for code in [200, 503, 404] {
        let rsp = c
            .send_request(get(&format!("http://{backend}/status/{code}")))
            .await
            .unwrap();
        assert_eq!(rsp.status().as_u16(), code);
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("status {code}\n"));
    }
    let base = format!(
        r#"direction="outbound",authority="{backend}",target_addr="{backend}",tls="false""#
    );
    let m = p
        .wait_metric(&format!(
            "response_total{{{base},status_code=\"404\",classification=\"success\",grpc_status=\"\",error=\"\"}} 1"
        ))
        .await;
    assert!(m.contains(&format!("request_total{{{base}}} 3\n")), "{m}");
    assert!(m.contains(&format!(
        "response_total{{{base},status_code=\"503\",classification=\"failure\",grpc_status=\"\",error=\"\"}} 1\n"
    )));
    // Three requests over one client connection reuse one upstream connection.
    assert!(m.contains(&format!(r#"tcp_open_total{{direction="outbound",peer="dst",target_addr="{backend}",tls="false"}} 1"#)), "{m}");
    assert!(m.contains(r#"protocol_detect_total{direction="outbound",result="http1"} 1"#));
}

#[tokio::test]
async fn inbound_forwards_to_the_configured_app() {
    let backend = backend().await;
    let p = proxy(&[("MESH_PROXY_INBOUND_FORWARD_ADDR", backend.to_string())]).await;
    let out = raw(
        p.inbound,
        b"GET /status/201 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
        "",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    // Inbound metrics carry no authority label: any client could mint new series.
    let m = p
        .wait_metric(&format!(r#"response_total{{direction="inbound",target_addr="{backend}",tls="false",status_code="201""#))
        .await;
    assert!(!m.contains("direction=\"inbound\",authority"), "{m}");
}

#[tokio::test]
async fn h2_grpc_trailers_pass_and_classify() {
    let backend = backend().await;
    let p = proxy(&[]).await;
    let mut c = h2(p.outbound).await;
    for code in ["0", "13"] {
        let req = Request::post(format!("http://{backend}/grpc/{code}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body("\0\0\0\0\0"))
            .unwrap();
        let rsp = c.send_request(req).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        let collected = rsp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], code);
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"\0\0\0\0\x02hi"));
    }
    let m = p.wait_metric("grpc_status=\"13\"").await;
    assert!(
        m.contains(r#"status_code="200",classification="failure",grpc_status="13",error="""#),
        "{m}"
    );
    assert!(
        m.contains(r#"status_code="200",classification="success",grpc_status="0",error="""#),
        "{m}"
    );
    assert!(m.contains(r#"protocol_detect_total{direction="outbound",result="h2"} 1"#));
}

#[tokio::test]
async fn bodies_stream_both_ways_without_buffering() {
    let backend = backend().await;
    let p = proxy(&[]).await;
    for h2_client in [false, true] {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(1);
        let stream = StreamBody::new(tokio_stream(rx));
        let req = Request::post(format!("http://{backend}/echo"))
            .body(BodyExt::boxed(stream))
            .unwrap();
        let rsp_fut = async {
            if h2_client {
                h2(p.outbound).await.send_request(req).await
            } else {
                h1(p.outbound).await.send_request(req).await
            }
        };
        tx.send(Ok(Frame::data(Bytes::from_static(b"ping-1"))))
            .await
            .unwrap();
        let rsp = rsp_fut.await.unwrap();
        let mut body = rsp.into_body();
        // The first chunk comes back while the request body is still open: nothing
        // waited for the whole body.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "ping-1");
        tx.send(Ok(Frame::data(Bytes::from_static(b"ping-2"))))
            .await
            .unwrap();
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "ping-2");
        drop(tx);
        assert!(body.collect().await.unwrap().to_bytes().is_empty());
    }
}

fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn upgrades_and_connect_tunnel_bytes() {
    let backend = backend().await;
    let echo = tcp_echo(None).await;
    let p = proxy(&[]).await;

    // An HTTP/1 upgrade, proxied to the backend.
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    s.write_all(format!("GET http://{backend}/upgrade HTTP/1.1\r\nHost: {backend}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_until(&mut s, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    s.write_all(b"raw bytes after upgrade").await.unwrap();
    assert_eq!(
        read_until(&mut s, "upgrade").await,
        "raw bytes after upgrade"
    );

    // CONNECT, answered by the proxy itself in explicit mode.
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    s.write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_until(&mut s, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"\x00\x01binary").await.unwrap();
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"\x00\x01binary");
}

#[tokio::test]
async fn failures_become_502_504_or_grpc_status() {
    let p = proxy(&[("MESH_PROXY_CONNECT_TIMEOUT", "200ms".to_string())]).await;
    // Nothing listens on this port: connection refused.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut c = h1(p.outbound).await;
    let rsp = c
        .send_request(get(&format!("http://{refused}/")))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    let why = rsp.headers()["mesh-proxy-error"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains(&format!("connect to {refused} failed")),
        "{why}"
    );

    let req = Request::post(format!("http://{refused}/svc/Method"))
        .header("content-type", "application/grpc")
        .body(body(""))
        .unwrap();
    let rsp = c.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["grpc-status"], "14");

    // A listener whose accept queue is full never completes the handshake.
    let (blackhole, _keep) = full_backlog();
    let rsp = c
        .send_request(get(&format!("http://{blackhole}/")))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(rsp.headers()["mesh-proxy-error"]
        .to_str()
        .unwrap()
        .contains("timed out after 200ms"));

    // Pointing the proxy at itself is refused rather than looping.
    let rsp = c
        .send_request(get(&format!("http://{}/", p.outbound)))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert!(rsp.headers()["mesh-proxy-error"]
        .to_str()
        .unwrap()
        .contains("own listener"));

    let m = p.wait_metric("error=\"timeout\"").await;
    assert!(
        m.contains(r#"status_code="502",classification="failure",grpc_status="",error="connect""#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"status_code="200",classification="failure",grpc_status="14",error="connect""#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"status_code="504",classification="failure",grpc_status="",error="timeout""#),
        "{m}"
    );
    // A failure decided before any connection is tried is counted too, with its label.
    assert!(
        m.lines().any(|l| l.starts_with("response_total{")
            && l.contains(&format!("authority=\"{}\"", p.outbound))
            && l.contains(
                r#"status_code="502",classification="failure",grpc_status="",error="loop""#
            )),
        "{m}"
    );
}

/// A listener that accepts nothing, with its queue filled, so that further
/// connection attempts hang in SYN_SENT.
fn full_backlog() -> (std::net::SocketAddr, Vec<std::net::TcpStream>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut keep = vec![];
    for _ in 0..4 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            keep.push(s);
        }
    }
    std::mem::forget(sock);
    (addr, keep)
}

#[tokio::test]
async fn bad_http1_input_gets_clean_errors() {
    let backend = backend().await;
    let p = proxy(&[
        ("MESH_PROXY_INBOUND_FORWARD_ADDR", backend.to_string()),
        ("MESH_PROXY_HTTP1_MAX_HEADER_BYTES", "16KiB".to_string()),
    ])
    .await;
    // A malformed header line.
    let out = raw(
        p.inbound,
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        "",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    // Headers larger than the limit.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let out = raw(p.inbound, big.as_bytes(), "").await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");
    // A request line with a bad version falls through detection as opaque TCP, and
    // reaches the app unchanged: the client gets exactly what the app says to it.
    let bad = b"GET / HTTP/9.9\r\n\r\n";
    assert_eq!(raw(p.inbound, bad, "").await, raw(backend, bad, "").await);
    // Nothing above disturbed the proxy.
    let out = raw(
        p.inbound,
        b"GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
}

/// The value of an `http_request_errors_total` series.
fn request_errors(p: &TestProxy, direction: &str, error: &str) -> u64 {
    let series =
        format!("http_request_errors_total{{direction=\"{direction}\",error=\"{error}\"}} ");
    p.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{}", p.metrics()))
}

#[tokio::test]
async fn bad_ports_in_the_authority_are_refused_not_sent_to_port_80() {
    let backend = backend().await;
    let p = proxy(&[("MESH_PROXY_INBOUND_FORWARD_ADDR", backend.to_string())]).await;
    let cases: [&[u8]; 4] = [
        b"GET http://127.0.0.1:99999/ HTTP/1.1\r\nHost: 127.0.0.1:99999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:65536\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18088abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: web:0\r\n\r\n",
    ];
    for req in cases {
        let out = raw(p.outbound, req, "\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
        assert!(
            out.contains("mesh-proxy-error: invalid authority"),
            "{out:?}"
        );
    }
    assert_eq!(request_errors(&p, "outbound", "invalid_authority"), 4);
    // Inbound too, although the request goes to the app either way: a Host with an
    // invalid value is a 400 (RFC 9112 §3.2), and no label is made of it.
    let out = raw(p.inbound, cases[2], "\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    assert_eq!(request_errors(&p, "inbound", "invalid_authority"), 1);
    // A valid port still goes where it says.
    let ok = format!(
        "GET http://{backend}/status/204 HTTP/1.1\r\nHost: {backend}\r\nConnection: close\r\n\r\n"
    );
    assert!(raw(p.outbound, ok.as_bytes(), "")
        .await
        .starts_with("HTTP/1.1 204"));
}

#[tokio::test]
async fn a_clients_broken_body_is_its_own_fault() {
    let backend = backend().await;
    let p = proxy(&[]).await;
    // A chunk size that is not hex, after a first good chunk.
    let req = format!(
        "POST http://{backend}/drain HTTP/1.1\r\nHost: {backend}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
    );
    let out = raw(p.outbound, req.as_bytes(), "\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    assert!(
        out.contains("mesh-proxy-error: the request body failed"),
        "{out:?}"
    );
    // Counted, as the client's fault: the service's success rate does not drop.
    let m = p
        .wait_metric(
            r#"status_code="400",classification="success",grpc_status="",error="request_body"} 1"#,
        )
        .await;
    assert!(!m.contains(r#"classification="failure""#), "{m}");
}

#[tokio::test]
async fn header_limits_are_configurable_and_named_when_hit() {
    let backend = backend().await;
    let many = wide_headers_backend(150, 8).await;
    let big = wide_headers_backend(4, 20 * 1024).await;
    let p = proxy(&[
        ("MESH_PROXY_INBOUND_FORWARD_ADDR", backend.to_string()),
        ("MESH_PROXY_HTTP1_MAX_HEADER_BYTES", "64KiB".to_string()),
    ])
    .await;
    // A request head of `n` extra fields, closing its connection.
    let fields = |n: usize| {
        let mut req = String::from("GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for i in 0..n {
            req.push_str(&format!("x-{i}: v\r\n"));
        }
        req + "\r\n"
    };
    // A request with more fields than the limit (100 by default): 431, counted as such.
    let out = raw(p.inbound, fields(120).as_bytes(), "").await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");
    // Counted once the connection is done with, just after the client read the 431.
    p.wait_metric(r#"http_request_errors_total{direction="inbound",error="too_many_headers"} 1"#)
        .await;
    // A request head over the size limit: 431 too, counted as the size.
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(80 * 1024)
    );
    let out = raw(p.inbound, req.as_bytes(), "").await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");
    p.wait_metric(r#"http_request_errors_total{direction="inbound",error="head_too_large"} 1"#)
        .await;
    assert_eq!(request_errors(&p, "inbound", "too_many_headers"), 1);
    // Responses: a 502 that says which limit the upstream's head went over.
    let get = |to: std::net::SocketAddr| {
        format!("GET http://{to}/ HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n")
    };
    let out = raw(p.outbound, get(many).as_bytes(), "").await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out:?}");
    assert!(
        out.contains("has more than 100 header fields (MESH_PROXY_HTTP1_MAX_HEADERS)"),
        "{out:?}"
    );
    let out = raw(p.outbound, get(big).as_bytes(), "").await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out:?}");
    assert!(
        out.contains("has more than 65536 bytes of head (MESH_PROXY_HTTP1_MAX_HEADER_BYTES)"),
        "{out:?}"
    );
    p.wait_metric(
        r#"status_code="502",classification="failure",grpc_status="",error="response_head"} 1"#,
    )
    .await;

    // With 200 fields and the default 408 KiB, the same messages pass (to an app that
    // takes them: hyper's own limit is 100 fields too).
    let plain = wide_headers_backend(0, 0).await;
    let roomy = proxy(&[
        ("MESH_PROXY_INBOUND_FORWARD_ADDR", plain.to_string()),
        ("MESH_PROXY_HTTP1_MAX_HEADERS", "200".to_string()),
    ])
    .await;
    let out = raw(roomy.inbound, fields(120).as_bytes(), "").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    for (to, what) in [(many, "150 fields"), (big, "80 KiB of head")] {
        let out = raw(roomy.outbound, get(to).as_bytes(), "").await;
        assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out:?}");
    }
}

#[tokio::test]
async fn invalid_h2_frames_close_only_their_connection() {
    let backend = backend().await;
    let p = proxy(&[("MESH_PROXY_INBOUND_FORWARD_ADDR", backend.to_string())]).await;
    let mut s = TcpStream::connect(p.inbound).await.unwrap();
    s.write_all(mesh_proxy::detect::H2_PREFACE).await.unwrap();
    // A SETTINGS frame with a length that is not a multiple of 6: FRAME_SIZE_ERROR.
    s.write_all(&[0, 0, 5, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    let out = read_until(&mut s, "").await;
    // The server's SETTINGS, then a GOAWAY (type 7), then close.
    assert!(
        out.as_bytes().windows(2).any(|w| w == [7, 0]),
        "{:?}",
        out.as_bytes()
    );
    assert_still_serves(p.inbound, backend, true).await;
}

#[tokio::test]
async fn stalled_and_reset_clients_do_not_disturb_others() {
    let backend = backend().await;
    let banner = tcp_echo(Some(b"220 ready\r\n")).await;
    let p = proxy(&[
        ("MESH_PROXY_DETECT_TIMEOUT", "100ms".to_string()),
        ("MESH_PROXY_INBOUND_FORWARD_ADDR", banner.to_string()),
    ])
    .await;

    // A client that says nothing: after the detection timeout the connection is
    // treated as TCP, so a server-speaks-first protocol works.
    let mut s = TcpStream::connect(p.inbound).await.unwrap();
    let out = read_until(&mut s, "\r\n").await;
    assert_eq!(out, "220 ready\r\n");
    s.write_all(b"EHLO x\r\n").await.unwrap();
    assert_eq!(read_until(&mut s, "\r\n").await, "EHLO x\r\n");
    p.wait_metric(r#"protocol_detect_total{direction="inbound",result="timeout"} 1"#)
        .await;

    // A client that promises a body, sends part of it and resets.
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    s.write_all(
        format!("POST http://{backend}/echo HTTP/1.1\r\nHost: b\r\nContent-Length: 100000\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(&[b'x'; 1000]).await.unwrap();
    s.set_zero_linger().unwrap();
    drop(s);

    // An upstream that dies mid-response.
    let trunc = truncating_backend().await;
    let mut c = h1(p.outbound).await;
    let rsp = c
        .send_request(get(&format!("http://{trunc}/")))
        .await
        .unwrap();
    assert!(rsp.into_body().collect().await.is_err());
    p.wait_metric(r#"classification="failure",grpc_status="",error="io""#)
        .await;

    assert_still_serves(p.outbound, backend, false).await;
}

#[tokio::test]
async fn opaque_ports_skip_detection() {
    let echo = tcp_echo(None).await;
    let p = proxy(&[
        ("MESH_PROXY_OPAQUE_PORTS", echo.port().to_string()),
        ("MESH_PROXY_INBOUND_FORWARD_ADDR", echo.to_string()),
    ])
    .await;
    let mut s = TcpStream::connect(p.inbound).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    s.shutdown().await.unwrap();
    // Echoed verbatim: not parsed as HTTP.
    assert_eq!(read_until(&mut s, "").await, "GET / HTTP/1.1\r\n\r\n");
    p.wait_metric(r#"protocol_detect_total{direction="inbound",result="opaque_port"} 1"#)
        .await;
    // Byte counts are final once the connection's close is counted.
    let l = format!(r#"direction="inbound",peer="src",target_addr="{echo}",tls="false""#);
    let m = p
        .wait_metric(&format!("tcp_close_total{{{l},errno=\"\"}} 1"))
        .await;
    assert!(
        m.contains(&format!("tcp_read_bytes_total{{{l}}} 18\n")),
        "{m}"
    );
    assert!(
        m.contains(&format!("tcp_write_bytes_total{{{l}}} 18\n")),
        "{m}"
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let backend = backend().await;
    let p = proxy(&[]).await;
    let mut c = h1(p.outbound).await;
    let slow = tokio::spawn(async move {
        let rsp = c
            .send_request(get(&format!("http://{backend}/delay/300")))
            .await
            .unwrap();
        (
            rsp.status(),
            rsp.into_body().collect().await.unwrap().to_bytes(),
        )
    });
    p.wait_metric("request_total{direction=\"outbound\"").await;
    // Ask to shut down over the admin API, as `POST /shutdown` does.
    let out = raw(
        p.admin,
        b"POST /shutdown HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "delayed\n");
    tokio::time::timeout(Duration::from_secs(5), p.done)
        .await
        .expect("proxy exits after draining")
        .unwrap();
    assert!(
        TcpStream::connect(p.outbound).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn admin_endpoints() {
    let p = proxy(&[]).await;
    // (method and path, status line start, something the body must contain)
    let cases = [
        ("GET /ready", "HTTP/1.1 200", "ready\n"),
        ("GET /live", "HTTP/1.1 200", "live\n"),
        ("GET /shutdown", "HTTP/1.1 405", "use POST"),
        ("GET /nope", "HTTP/1.1 404", "not found"),
        (
            "GET /metrics",
            "HTTP/1.1 200",
            "# TYPE request_total counter",
        ),
    ];
    for (request, status, body) in cases {
        let req = format!("{request} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let out = raw(p.admin, req.as_bytes(), "").await;
        assert!(
            out.starts_with(status) && out.contains(body),
            "{request}: {out}"
        );
    }
}

#[tokio::test]
async fn http1_trailers_pass_and_count_as_success() {
    let backend = backend().await;
    let p = proxy(&[]).await;
    let mut c = h1(p.outbound).await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let frames = vec![
        Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"payload"))),
        Ok(Frame::trailers(trailers)),
    ];
    let req = Request::post(format!("http://{backend}/echo"))
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .header("transfer-encoding", "chunked")
        .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            frames,
        ))))
        .unwrap();
    let rsp = c.send_request(req).await.unwrap();
    let collected = rsp.into_body().collect().await.unwrap();
    assert_eq!(
        collected.trailers().expect("trailers came back")["x-checksum"],
        "abc"
    );
    assert_eq!(collected.to_bytes(), "payload");
    let m = p.wait_metric("response_total{direction=\"outbound\"").await;
    assert!(
        m.contains(r#"status_code="200",classification="success",grpc_status="",error="""#),
        "{m}"
    );
    assert!(!m.contains("cancelled"), "{m}");
}

/// A client that names a new authority in every request cannot grow the proxy's
/// metric series past `MESH_PROXY_METRICS_MAX_SERIES`: the requests beyond are
/// counted in the overflow series, and the refusals in
/// `metrics_series_overflow_total`.
#[tokio::test]
async fn metric_series_stay_at_the_cap_under_invented_authorities() {
    let p = proxy(&[("MESH_PROXY_METRICS_MAX_SERIES", "10".into())]).await;
    // 40 distinct ports nothing listens on any more: each request is a new target
    // (and authority), refused upstream and answered 502, a series all the same.
    let mut listeners = Vec::new();
    for _ in 0..40 {
        listeners.push(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    }
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(listeners);
    let mut c = h1(p.outbound).await;
    for port in ports {
        let rsp = c
            .send_request(get(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        rsp.into_body().collect().await.unwrap();
    }
    let m = p
        .wait_metric("metrics_series_overflow_total{family=\"http\",direction=\"outbound\"} 30\n")
        .await;
    let series = m
        .lines()
        .filter(|l| l.starts_with("request_total{direction=\"outbound\""))
        .count();
    assert_eq!(series, 11, "ten series and the overflow one:\n{m}");
    assert!(
        m.contains("request_total{direction=\"outbound\",series_overflow=\"true\"} 30\n"),
        "{m}"
    );
}
