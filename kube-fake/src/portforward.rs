//! `pods/portforward` as the API server and kubelet serve it to kube-rs's client
//! (`Api::<Pod>::portforward`): a WebSocket upgrade of
//! `GET /api/v1/namespaces/{ns}/pods/{name}/portforward?ports=P[,Q]` speaking the
//! `v4.channel.k8s.io` subprotocol, the one of kube's offers (`v5`, `v4`) a kubelet's
//! port-forward accepts.
//!
//! The framing is the kubelet's (`pkg/kubelet/cri/streaming/portforward/websocket.go`):
//! the `i`-th requested port has a data channel `2i` and an error channel `2i + 1`;
//! each binary frame starts with its channel's byte; the server first sends, on every
//! channel, the port number as two little-endian bytes (kube's client checks them).
//! Where a real kubelet dials the port inside the pod's network namespace, the fake
//! dials the loopback address the test registered for `(namespace, pod, port)`
//! ([`crate::FakeKube::forward_port`]); a port with none, or whose address refuses,
//! gets the kubelet's message on its error channel, and the forward of that port ends.
//!
//! What the API server refuses before any upgrade is refused as it refuses it: a pod
//! that does not exist (404), one with no node (400), no or bad `ports` (400); a
//! request that is not a WebSocket upgrade (a POST for SPDY, which kubectl speaks) is
//! a 400 saying the fake speaks WebSocket only.
//!
//! Lifecycle: the forward runs on its connection's task (so dropping the `FakeKube`
//! ends it with every other connection); it ends when the client closes the WebSocket,
//! or, as a kubelet does, when every port's connection to the pod has ended (reading
//! side at EOF or failed), with a close frame.

use std::{collections::HashMap, net::SocketAddr};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{header, HeaderMap, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
    task::JoinSet,
};
use tokio_tungstenite::{
    tungstenite::{handshake::derive_accept_key, protocol::Role, Message},
    WebSocketStream,
};

/// The one subprotocol served: binary frames, a channel byte first.
pub(crate) const PROTOCOL: &str = "v4.channel.k8s.io";

/// Where the test said each pod's port leads: `(namespace, pod, port)` → a loopback
/// address standing for the pod's port.
#[derive(Debug, Default)]
pub(crate) struct Forwards(HashMap<(String, String, u16), SocketAddr>);

impl Forwards {
    pub(crate) fn insert(&mut self, namespace: &str, pod: &str, port: u16, to: SocketAddr) {
        self.0.insert((namespace.into(), pod.into(), port), to);
    }

    pub(crate) fn remove(&mut self, namespace: &str, pod: &str, port: u16) {
        self.0.remove(&(namespace.into(), pod.into(), port));
    }

    fn get(&self, namespace: &str, pod: &str, port: u16) -> Option<SocketAddr> {
        self.0
            .get(&(namespace.to_owned(), pod.to_owned(), port))
            .copied()
    }
}

/// An accepted port-forward, waiting for its connection to be upgraded.
pub(crate) struct Accepted {
    pub(crate) upgrade: OnUpgrade,
    pub(crate) plan: Plan,
}

/// What each requested port is forwarded to: an address, or the kubelet's error.
pub(crate) struct Plan {
    pod: String,
    uid: String,
    ports: Vec<(u16, Result<SocketAddr, String>)>,
}

/// Reads `ports` as the API server does: one or more `ports` parameters, each a
/// comma-separated list of numbers in 1–65535.
pub(crate) fn parse_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "ports" {
            continue;
        }
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("invalid port {p:?}: must be 1-65535")),
            }
        }
    }
    if ports.is_empty() {
        return Err("at least one port must be specified".into());
    }
    // Two channels a port, each named by one byte.
    if ports.len() > 128 {
        return Err(format!(
            "{} ports: at most 128 can be forwarded at once",
            ports.len()
        ));
    }
    Ok(ports)
}

/// An accepted WebSocket handshake.
pub(crate) struct Handshake {
    /// `Sec-WebSocket-Accept`.
    accept: String,
    /// Whether the client asked for [`PROTOCOL`]; a client that names no subprotocol
    /// gets the same framing with none named, as from the kubelet.
    protocol: bool,
}

/// Checks the WebSocket handshake and picks the subprotocol, or says why the request
/// cannot be served.
pub(crate) fn handshake(headers: &HeaderMap) -> Result<Handshake, String> {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(
            "upgrade request required: the fake API server forwards ports over WebSocket \
             (v4.channel.k8s.io) only, not SPDY"
                .into(),
        );
    }
    if !has(header::SEC_WEBSOCKET_VERSION, "13") {
        return Err("unsupported WebSocket version: 13 is required".into());
    }
    let offered = headers.get(header::SEC_WEBSOCKET_PROTOCOL);
    let protocol = has(header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL);
    if offered.is_some() && !protocol {
        let offered = offered.and_then(|v| v.to_str().ok()).unwrap_or("");
        return Err(format!(
            "requested protocol(s) {offered:?} are not supported: {PROTOCOL} is"
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    Ok(Handshake {
        accept: derive_accept_key(key.as_bytes()),
        protocol,
    })
}

/// The plan for a pod's ports: each registered address, or the kubelet's message for a
/// port nothing is registered for (as for a port nothing listens on in the pod).
pub(crate) fn plan(
    forwards: &Forwards,
    namespace: &str,
    pod: &str,
    uid: &str,
    ports: &[u16],
) -> Plan {
    let ports = ports
        .iter()
        .map(|&port| {
            let to = forwards.get(namespace, pod, port).ok_or_else(|| {
                kubelet_error(
                    port,
                    pod,
                    uid,
                    &format!("dial tcp4 127.0.0.1:{port}: connect: connection refused"),
                )
            });
            (port, to)
        })
        .collect();
    Plan {
        pod: pod.into(),
        uid: uid.into(),
        ports,
    }
}

/// The kubelet's message on a port's error channel.
fn kubelet_error(port: u16, pod: &str, uid: &str, why: &str) -> String {
    format!(
        "error forwarding port {port} to pod {pod}, uid {uid}: failed to connect to \
         localhost:{port} inside namespace of the pod: {why}"
    )
}

/// The 101 answer to an accepted handshake.
pub(crate) fn switching(handshake: &Handshake) -> http::response::Builder {
    let rsp = http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, &handshake.accept);
    match handshake.protocol {
        true => rsp.header(header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL),
        false => rsp,
    }
}

// === impl Accepted ===

impl Accepted {
    /// Runs the forward once the connection is upgraded, until it ends (see the
    /// module's lifecycle).
    pub(crate) async fn run(self) {
        let upgraded = match self.upgrade.await {
            Ok(io) => io,
            Err(error) => {
                tracing::debug!(%error, "port-forward upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let pod = self.plan.pod.clone();
        if let Err(error) = forward(ws, self.plan).await {
            tracing::debug!(%error, %pod, "port-forward ended");
        }
    }
}

/// Copies each port's bytes both ways between the WebSocket and the pod's addresses.
async fn forward<S>(
    ws: WebSocketStream<S>,
    plan: Plan,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut frames) = ws.split();
    // Frames for the client, from every port's reader: one writer (this loop) owns the
    // sink.
    let (out, mut to_client) = mpsc::channel::<Vec<u8>>(16);
    // Each port's writer: bytes the client sent on its data channel. Unbounded: a test
    // fake whose pods are loopback servers that read what they are sent.
    let mut to_pod: Vec<Option<mpsc::UnboundedSender<Bytes>>> = Vec::new();
    let mut readers = JoinSet::new();
    for (i, (port, _)) in plan.ports.iter().enumerate() {
        let [lo, hi] = port.to_le_bytes();
        let data = (2 * i) as u8;
        sink.feed(Message::binary(vec![data, lo, hi])).await?;
        sink.feed(Message::binary(vec![data + 1, lo, hi])).await?;
    }
    sink.flush().await?;
    for (i, (port, to)) in plan.ports.into_iter().enumerate() {
        let data = (2 * i) as u8;
        let stream = match to {
            Ok(addr) => TcpStream::connect(addr).await.map_err(|e| {
                kubelet_error(
                    port,
                    &plan.pod,
                    &plan.uid,
                    &format!("dial tcp4 {addr}: {e}"),
                )
            }),
            Err(message) => Err(message),
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(message) => {
                let mut frame = vec![data + 1];
                frame.extend_from_slice(message.as_bytes());
                sink.send(Message::binary(frame)).await?;
                to_pod.push(None);
                continue;
            }
        };
        let (mut read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        to_pod.push(Some(tx));
        readers.spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
        let out = out.clone();
        readers.spawn(async move {
            let mut buf = vec![0; 16 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let mut frame = Vec::with_capacity(n + 1);
                        frame.push(data);
                        frame.extend_from_slice(&buf[..n]);
                        if out.send(frame).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(out);
    loop {
        tokio::select! {
            frame = to_client.recv() => match frame {
                Some(frame) => sink.send(Message::binary(frame)).await?,
                // Every port's reader is done: as the kubelet, close the stream.
                None => break,
            },
            frame = frames.next() => match frame {
                Some(Ok(Message::Binary(bytes))) if bytes.len() > 1 => {
                    let channel = usize::from(bytes[0]);
                    // Data channels only; a port whose connection failed drops its bytes.
                    if channel % 2 == 0 {
                        if let Some(Some(tx)) = to_pod.get(channel / 2) {
                            let _ = tx.send(bytes.slice(1..));
                        }
                    }
                }
                // The client is done: answer its close (tungstenite queued the reply;
                // closing the sink sends it), as a server ends the handshake.
                Some(Ok(Message::Close(_))) => return sink.close().await,
                None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
            },
        }
    }
    // Closing the writers' channels ends them; the readers have ended already.
    drop(to_pod);
    while readers.join_next().await.is_some() {}
    sink.send(Message::Close(None)).await?;
    sink.flush().await
}
