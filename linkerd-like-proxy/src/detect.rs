//! Protocol detection: decides from a connection's first bytes whether it carries
//! HTTP/1.x, HTTP/2 with prior knowledge, or something the proxy must treat as opaque
//! TCP.
//!
//! The decision is made as early as the bytes allow: a TLS ClientHello or any binary
//! protocol is recognised as opaque on its first byte, so only clients that send
//! nothing at all wait for the detection timeout. The bytes read are never lost: they
//! are handed back with the result and replayed to whatever serves the connection.

use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How many bytes detection reads at most before deciding.
pub const DETECT_BUFFER: usize = 1024;

const MAX_METHOD_LEN: usize = 24;

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Opaque,
    /// The bytes so far are a prefix of an HTTP request; more are needed.
    NeedMore,
}

/// The outcome of detection on a connection, as counted by `protocol_detect_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// The bytes were not HTTP.
    Tcp,
    /// The client sent too little before the timeout (or closed): treated as TCP.
    Timeout,
    /// The port is configured opaque: detection was skipped.
    OpaquePort,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Self::Http1,
        Self::Http2,
        Self::Tcp,
        Self::Timeout,
        Self::OpaquePort,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "h2",
            Self::Tcp => "tcp",
            Self::Timeout => "timeout",
            Self::OpaquePort => "opaque_port",
        }
    }

    pub fn is_http(self) -> bool {
        matches!(self, Self::Http1 | Self::Http2)
    }
}

/// Classifies a buffer that holds the first bytes a client sent.
///
/// HTTP/1 is recognised on a complete request line (`METHOD SP target SP HTTP/1.x`),
/// or, when the buffer is full, on a valid method followed by a plausible request
/// target: a long URI must not turn an HTTP request into opaque TCP.
pub fn detect(buf: &[u8]) -> Detected {
    if buf.is_empty() {
        return Detected::NeedMore;
    }
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return Detected::NeedMore;
    }
    if buf.starts_with(H2_PREFACE) {
        return Detected::Http2;
    }
    detect_http1(buf)
}

fn is_tchar(b: u8) -> bool {
    // RFC 9110 §5.6.2 token characters.
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn detect_http1(buf: &[u8]) -> Detected {
    // Method.
    let method_len = buf.iter().take_while(|b| is_tchar(**b)).count();
    if method_len == buf.len() {
        return if method_len <= MAX_METHOD_LEN {
            Detected::NeedMore
        } else {
            Detected::Opaque
        };
    }
    if method_len == 0 || method_len > MAX_METHOD_LEN || buf[method_len] != b' ' {
        return Detected::Opaque;
    }
    // Request target: visible ASCII up to the next space.
    let rest = &buf[method_len + 1..];
    let target_len = rest.iter().take_while(|b| b.is_ascii_graphic()).count();
    if target_len == rest.len() {
        // Still inside the target. A full buffer with a sane start is HTTP: let the
        // HTTP parser judge the rest (and answer 414 if it must).
        if buf.len() >= DETECT_BUFFER && target_len > 0 && plausible_target(rest) {
            return Detected::Http1;
        }
        return Detected::NeedMore;
    }
    if target_len == 0 || rest[target_len] != b' ' || !plausible_target(rest) {
        return Detected::Opaque;
    }
    // Version and line end.
    let version = &rest[target_len + 1..];
    const V: &[u8] = b"HTTP/1.";
    let n = version.len().min(V.len());
    if version[..n] != V[..n] {
        return Detected::Opaque;
    }
    match version.get(V.len()..) {
        None | Some([]) => Detected::NeedMore,
        Some([d, ..]) if !d.is_ascii_digit() => Detected::Opaque,
        Some([_]) => Detected::NeedMore,
        Some([_, b'\r']) => Detected::NeedMore,
        Some([_, b'\n', ..]) | Some([_, b'\r', b'\n', ..]) => Detected::Http1,
        Some(_) => Detected::Opaque,
    }
}

fn plausible_target(target: &[u8]) -> bool {
    // origin-form, asterisk-form, absolute-form or authority-form (CONNECT).
    matches!(target.first(), Some(b'/') | Some(b'*'))
        || target
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'[')
}

/// Reads from `io` until the protocol is known, the buffer is full, the client
/// closes, or `timeout` passes. Returns the outcome and every byte read.
pub async fn detect_io<I: AsyncRead + Unpin>(
    io: &mut I,
    timeout: Duration,
) -> std::io::Result<(Protocol, BytesMut)> {
    let mut buf = BytesMut::with_capacity(DETECT_BUFFER);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        match read {
            Err(_elapsed) => return Ok((Protocol::Timeout, buf)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => {
                // The client closed before saying enough: nothing HTTP can follow.
                let p = if buf.is_empty() {
                    Protocol::Timeout
                } else {
                    Protocol::Tcp
                };
                return Ok((p, buf));
            }
            Ok(Ok(_)) => {}
        }
        match detect(&buf) {
            Detected::Http1 => return Ok((Protocol::Http1, buf)),
            Detected::Http2 => return Ok((Protocol::Http2, buf)),
            Detected::Opaque => return Ok((Protocol::Tcp, buf)),
            Detected::NeedMore if buf.len() >= DETECT_BUFFER => return Ok((Protocol::Tcp, buf)),
            Detected::NeedMore => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_request_lines() {
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detected::Http1);
        assert_eq!(
            detect(b"POST /a?b=c HTTP/1.0\r\nHost: x\r\n\r\n"),
            Detected::Http1
        );
        assert_eq!(
            detect(b"GET http://example.com/ HTTP/1.1\n"),
            Detected::Http1
        );
        assert_eq!(
            detect(b"CONNECT example.com:443 HTTP/1.1\r\n"),
            Detected::Http1
        );
        assert_eq!(detect(b"OPTIONS * HTTP/1.1\r\n"), Detected::Http1);
    }

    #[test]
    fn prefixes_need_more() {
        let line = b"GET /index.html HTTP/1.1\r\n";
        for n in 1..line.len() - 1 {
            assert_eq!(
                detect(&line[..n]),
                Detected::NeedMore,
                "{:?}",
                String::from_utf8_lossy(&line[..n])
            );
        }
        for n in 1..H2_PREFACE.len() {
            assert_eq!(detect(&H2_PREFACE[..n]), Detected::NeedMore);
        }
    }

    #[test]
    fn h2_preface() {
        let mut b = H2_PREFACE.to_vec();
        b.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(detect(&b), Detected::Http2);
    }

    #[test]
    fn opaque_on_first_bad_byte() {
        assert_eq!(detect(&[0x16, 0x03, 0x01]), Detected::Opaque); // TLS ClientHello
        assert_eq!(detect(b"\x00\x00"), Detected::Opaque);
        assert_eq!(detect(b"SSH-2.0-OpenSSH\r\n"), Detected::Opaque);
        assert_eq!(detect(b"GET  / HTTP/1.1\r\n"), Detected::Opaque);
        assert_eq!(detect(b"GET / HTTP/2.0\r\n"), Detected::Opaque);
        assert_eq!(detect(b"GET / HTTP/1.1xx"), Detected::Opaque);
        assert_eq!(detect(b"*1\r\n$4\r\nPING\r\n"), Detected::Opaque); // Redis
    }

    #[test]
    fn long_uri_is_http_when_buffer_fills() {
        let mut b = b"GET /".to_vec();
        b.resize(DETECT_BUFFER, b'a');
        assert_eq!(detect(&b), Detected::Http1);
        let mut b = b"PUTX".to_vec();
        b.resize(DETECT_BUFFER, b'A');
        assert_eq!(detect(&b), Detected::Opaque);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_times_out() {
        let (mut client, _server) = tokio::io::duplex(64);
        let (p, buf) = detect_io(&mut client, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(p, Protocol::Timeout);
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn split_request_line_is_detected() {
        use tokio::io::AsyncWriteExt;
        let (mut a, mut b) = tokio::io::duplex(64);
        let w = tokio::spawn(async move {
            for chunk in [&b"GE"[..], b"T /x HT", b"TP/1.1\r", b"\nHost: y\r\n\r\n"] {
                b.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            b
        });
        let (p, buf) = detect_io(&mut a, Duration::from_secs(5)).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        assert!(buf.starts_with(b"GET /x HTTP/1.1\r\n"));
        drop(w.await);
    }
}
