//! Reading a TLS ClientHello's server name without terminating the connection, so
//! that the inbound side can tell mesh TLS (SNI = this proxy's identity) from the
//! application's own TLS (any other name, or none), which passes through untouched.
//!
//! Only the first record is read: a ClientHello that does not fit in one record (no
//! proxy sends one) is treated as having no server name.

use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// TLS record type of a handshake message.
const HANDSHAKE: u8 = 0x16;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// The server_name extension, and its `host_name` entry type.
const EXT_SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;
/// A record's plaintext is at most 2^14 bytes (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello<'a> {
    /// Not a TLS handshake.
    NotTls,
    /// The first record is not complete yet.
    NeedMore,
    /// A ClientHello, and the server name it asks for, if any (or if it could not be
    /// read: a malformed hello is the server's to refuse, not ours).
    ClientHello(Option<&'a str>),
}

/// Parses the first bytes of a connection. Never panics, whatever the input.
pub fn parse(buf: &[u8]) -> Hello<'_> {
    match buf.first() {
        None => return Hello::NeedMore,
        Some(&HANDSHAKE) => {}
        Some(_) => return Hello::NotTls,
    }
    if buf.len() < 5 {
        return Hello::NeedMore;
    }
    // A TLS record's legacy version is 3.x.
    if buf[1] != 3 {
        return Hello::NotTls;
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if len > MAX_RECORD + 256 {
        return Hello::NotTls;
    }
    let Some(record) = buf.get(5..5 + len) else {
        return Hello::NeedMore;
    };
    Hello::ClientHello(server_name(record))
}

/// The `host_name` of a ClientHello handshake message, if it has one.
fn server_name(record: &[u8]) -> Option<&str> {
    let mut r = Reader(record);
    if r.u8()? != CLIENT_HELLO {
        return None;
    }
    let len = r.u24()?;
    let body = r.take(len)?;
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    let session = r.u8()?;
    r.take(usize::from(session))?;
    let suites = r.u16()?;
    r.take(usize::from(suites))?;
    let compression = r.u8()?;
    r.take(usize::from(compression))?;
    let exts = r.u16()?;
    let mut exts = Reader(r.take(usize::from(exts))?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let len = exts.u16()?;
        let data = exts.take(usize::from(len))?;
        if kind != EXT_SERVER_NAME {
            continue;
        }
        let mut d = Reader(data);
        let list = d.u16()?;
        let mut list = Reader(d.take(usize::from(list))?);
        while !list.0.is_empty() {
            let kind = list.u8()?;
            let len = list.u16()?;
            let name = list.take(usize::from(len))?;
            if kind == HOST_NAME {
                return std::str::from_utf8(name).ok();
            }
        }
        return None;
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// What [`peek`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Peeked {
    /// A ClientHello naming this server (mesh TLS).
    Mesh,
    /// Anything else: plaintext, another name's TLS, a closed connection.
    Other,
    /// The client sent nothing within the timeout (a server-speaks-first protocol, or
    /// an idle client).
    Silent,
}

/// Reads from `io` until its first bytes say whether it is mesh TLS (a ClientHello
/// whose server name `is_mesh` accepts), the client closes, or `timeout` passes.
/// Every byte read is left in `buf`.
pub async fn peek<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    is_mesh: impl Fn(&str) -> bool,
    timeout: Duration,
) -> std::io::Result<Peeked> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match parse(buf) {
            Hello::NotTls => return Ok(Peeked::Other),
            Hello::ClientHello(sni) => {
                return Ok(match sni {
                    Some(s) if is_mesh(s) => Peeked::Mesh,
                    _ => Peeked::Other,
                })
            }
            Hello::NeedMore => {}
        }
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Err(_) if buf.is_empty() => return Ok(Peeked::Silent),
            Err(_) | Ok(Ok(0)) => return Ok(Peeked::Other),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello with the given extensions, in one record.
    fn hello(exts: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one suite
        body.extend([1, 0]); // null compression
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![CLIENT_HELLO, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend(body);
        let mut rec = vec![HANDSHAKE, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    fn sni(name: &str) -> Vec<u8> {
        let mut entry = vec![HOST_NAME];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name.as_bytes());
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend(entry);
        let mut ext = vec![0, 0];
        ext.extend((list.len() as u16).to_be_bytes());
        ext.extend(list);
        ext
    }

    #[test]
    fn finds_the_server_name_after_other_extensions() {
        let mut exts = vec![0, 10, 0, 2, 0, 29]; // supported_groups, first
        exts.extend(sni("web.ns.serviceaccount.identity.mesh.cluster.local"));
        let h = hello(&exts);
        assert_eq!(
            parse(&h),
            Hello::ClientHello(Some("web.ns.serviceaccount.identity.mesh.cluster.local"))
        );
        // Every strict prefix needs more; nothing panics.
        for i in 0..h.len() {
            assert_eq!(parse(&h[..i]), Hello::NeedMore, "at {i}");
        }
    }

    #[test]
    fn no_name_plaintext_and_garbage() {
        assert_eq!(parse(&hello(&[])), Hello::ClientHello(None));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(&[HANDSHAKE, 9, 9, 0, 1, 0]), Hello::NotTls);
        // A record that claims a hello but holds nonsense.
        assert_eq!(
            parse(&[HANDSHAKE, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
            Hello::ClientHello(None)
        );
        // A name list longer than its extension.
        let mut bad = sni("x");
        bad[5] = 200;
        assert_eq!(parse(&hello(&bad)), Hello::ClientHello(None));
    }

    #[tokio::test]
    async fn peek_reads_a_split_hello_and_keeps_every_byte() {
        let h = hello(&sni("me.ns.serviceaccount.identity.mesh.cluster.local"));
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let (a, b) = h.split_at(7);
        use tokio::io::AsyncWriteExt;
        client.write_all(a).await.unwrap();
        let sent = h.clone();
        let mut buf = BytesMut::new();
        let (peeked, ()) = tokio::join!(
            peek(
                &mut server,
                &mut buf,
                |s| s.eq_ignore_ascii_case("ME.ns.serviceaccount.identity.mesh.cluster.local"),
                Duration::from_secs(5)
            ),
            async {
                tokio::task::yield_now().await;
                client.write_all(b).await.unwrap();
            }
        );
        assert_eq!(peeked.unwrap(), Peeked::Mesh);
        assert_eq!(&buf[..], &sent[..]);

        let (_client, mut server) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let peeked = peek(&mut server, &mut buf, |_| true, Duration::from_millis(20)).await;
        assert_eq!(peeked.unwrap(), Peeked::Silent);
    }
}
