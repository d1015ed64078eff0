//! The demo application: `web`, `emoji` and `voting`, each a hyper server on its own app
//! port, run as tokio tasks inside the `mesh` process.
//!
//! They are deliberately ordinary apps: they know nothing of the mesh except the one thing
//! explicit mode asks of them, namely to send outgoing requests to their proxy's outbound
//! port (see [`super::client`]). Their behaviour is chosen to give the proxy something to
//! show: a gRPC hop (`web` → `emoji`), a route that fails a share of requests
//! (`POST /vote/:choice` on `voting`) and a route that is slow (`GET /api/leaderboard` on
//! `web`). The slow route is `web`'s own, not `voting`'s: `voting` runs three replicas
//! behind a latency-aware balancer, and a route that is slow on every replica would
//! hide the one replica that is slow on purpose.

use super::{
    client::AppClient,
    grpc::{self, Emoji},
    topology::{Instance, Topology, Workload, SLOW_REPLICA_DELAY},
};
use anyhow::Context as _;
use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{
    body::{Body, Frame, Incoming},
    service::{service_fn, Service},
    Request, Response,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use std::{
    collections::HashMap,
    convert::Infallible,
    error::Error as StdError,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The share of `POST /vote/:choice` requests that `voting` fails with a 500.
const VOTE_FAILURE_RATE: f64 = 0.25;

/// How long `web` takes over `GET /api/leaderboard`, in milliseconds, uniformly drawn.
const LEADERBOARD_DELAY_MS: std::ops::RangeInclusive<u64> = 300..=800;

/// The emoji `emoji` knows, as `(shortcode, unicode)`; the vote-bot votes for these.
pub(crate) const EMOJI: &[(&str, &str)] = &[
    ("joy", "😂"),
    ("hundred", "💯"),
    ("rocket", "🚀"),
    ("tada", "🎉"),
    ("heart", "❤️"),
    ("fire", "🔥"),
    ("clap", "👏"),
    ("thinking", "🤔"),
    ("sunglasses", "😎"),
    ("wave", "👋"),
];

type TextResponse = Response<Full<Bytes>>;

/// A gRPC response body: at most one message, then trailers carrying `grpc-status`.
type GrpcBody = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// Binds every app's port, then serves each on its own task until `shutdown` fires.
///
/// All ports are bound before any server starts, so a port that is taken fails the demo
/// before anything else (in particular, any proxy) has been started.
pub(crate) async fn start(
    topology: &Topology,
    proxied: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let web_listener = bind(topology.get(Workload::Web)).await?;
    let emoji_listener = bind(topology.get(Workload::Emoji)).await?;
    let mut voting_listeners = Vec::new();
    for replica in topology.replicas(Workload::Voting) {
        voting_listeners.push((bind(replica).await?, replica.is_slow()));
    }

    let app = Arc::new(Web::new(topology, proxied));
    let svc = service_fn(move |req| app.clone().handle(req));
    tokio::spawn(serve(web_listener, false, svc, shutdown.clone()));

    let catalog: Arc<Vec<Emoji>> = Arc::new(
        EMOJI
            .iter()
            .map(|(shortcode, unicode)| Emoji {
                unicode: (*unicode).into(),
                shortcode: (*shortcode).into(),
            })
            .collect(),
    );
    let svc = service_fn(move |req| emoji(catalog.clone(), req));
    tokio::spawn(serve(emoji_listener, true, svc, shutdown.clone()));

    // The replicas share their counts, as replicas of a real service share a database.
    let counts = Arc::new(Mutex::new(HashMap::new()));
    for (listener, slow) in voting_listeners {
        let app = Arc::new(Voting {
            counts: counts.clone(),
            extra_delay: slow.then_some(SLOW_REPLICA_DELAY),
        });
        let svc = service_fn(move |req| app.clone().handle(req));
        tokio::spawn(serve(listener, false, svc, shutdown.clone()));
    }
    Ok(())
}

async fn bind(instance: &Instance) -> anyhow::Result<TcpListener> {
    let addr = instance.app;
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "{} app cannot listen on {addr} (is another demo running? try --base-port)",
            instance.name()
        )
    })
}

/// Accepts connections and serves each with `service`, over HTTP/2 (prior knowledge) or
/// HTTP/1, until `shutdown` fires.
async fn serve<S, B>(listener: TcpListener, http2: bool, service: S, shutdown: CancellationToken)
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Typically out of file descriptors: back off rather than spin.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let service = service.clone();
        tokio::spawn(async move {
            let served = if http2 {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
            };
            if let Err(error) = served {
                debug!(%error, "connection closed with an error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> TextResponse {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

// === web ===

/// The front end: turns the vote-bot's HTTP/1 requests into calls to `emoji` and `voting`.
#[derive(Debug)]
struct Web {
    emoji: AppClient,
    voting: AppClient,
    /// How `web` addresses `emoji` and `voting`: by service name when meshed (its proxy
    /// asks the controller where that is), by the (first) app's address otherwise.
    emoji_addr: String,
    voting_addr: String,
}

impl Web {
    fn new(topology: &Topology, proxied: bool) -> Self {
        let outbound = proxied.then_some(topology.get(Workload::Web).outbound);
        let addr = |w: Workload| {
            if proxied {
                w.authority()
            } else {
                topology.get(w).app.to_string()
            }
        };
        Self {
            emoji: AppClient::http2(outbound),
            voting: AppClient::http1(outbound),
            emoji_addr: addr(Workload::Emoji),
            voting_addr: addr(Workload::Voting),
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<TextResponse, Infallible> {
        let rsp = match (req.method(), req.uri().path()) {
            (&Method::GET, "/api/list") => self.list().await,
            (&Method::GET | &Method::POST, "/api/vote") => {
                let choice = req.uri().query().and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("choice="))
                        .map(str::to_owned)
                });
                match choice {
                    Some(choice) => self.vote(&choice).await,
                    None => Ok(text(StatusCode::BAD_REQUEST, "missing ?choice=\n")),
                }
            }
            (&Method::GET, "/api/leaderboard") => self.leaderboard().await,
            _ => Ok(text(StatusCode::NOT_FOUND, "not found\n")),
        };
        // A failed call to a callee is this app's 502, as a real front end would answer.
        Ok(rsp.unwrap_or_else(|error| text(StatusCode::BAD_GATEWAY, format!("{error:#}\n"))))
    }

    async fn list(&self) -> anyhow::Result<TextResponse> {
        let (status, msg) = self.call_emoji(grpc::LIST_ALL, Vec::new()).await?;
        anyhow::ensure!(status == grpc::code::OK, "ListAll: grpc-status {status}");
        let list = grpc::decode_list_response(&msg)?;
        let body: String = list
            .iter()
            .map(|e| format!("{} {}\n", e.unicode, e.shortcode))
            .collect();
        Ok(text(StatusCode::OK, body))
    }

    async fn vote(&self, choice: &str) -> anyhow::Result<TextResponse> {
        let request = grpc::encode_find_request(choice);
        let (status, msg) = self.call_emoji(grpc::FIND_BY_SHORTCODE, request).await?;
        let emoji = match status {
            grpc::code::OK => grpc::decode_find_response(&msg)?,
            grpc::code::NOT_FOUND => None,
            status => anyhow::bail!("FindByShortcode: grpc-status {status}"),
        };
        let Some(emoji) = emoji else {
            return Ok(text(
                StatusCode::NOT_FOUND,
                format!("no emoji {choice:?}\n"),
            ));
        };

        let uri = format!("http://{}/vote/{}", self.voting_addr, emoji.shortcode);
        let req = Request::post(uri).body(Full::default())?;
        let rsp = self.voting.request(req).await?;
        let status = rsp.status();
        // Drain the body so the pooled connection can be reused.
        let _ = rsp.into_body().collect().await;
        if status.is_success() {
            Ok(text(
                StatusCode::OK,
                format!("voted for {}\n", emoji.unicode),
            ))
        } else {
            // Pass voting's failure through, so it shows on every hop up to the vote-bot.
            Ok(text(status, format!("voting answered {status}\n")))
        }
    }

    async fn leaderboard(&self) -> anyhow::Result<TextResponse> {
        // Rendering the leaderboard is slow on purpose: a slow route to show.
        let delay = rand::thread_rng().gen_range(LEADERBOARD_DELAY_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let uri = format!("http://{}/leaderboard", self.voting_addr);
        let rsp = self
            .voting
            .request(Request::get(uri).body(Full::default())?)
            .await?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        Ok(text(status, body))
    }

    /// Makes a unary gRPC call to `emoji`; returns its `grpc-status` and, when that is OK,
    /// the response message.
    async fn call_emoji(&self, path: &str, message: Vec<u8>) -> anyhow::Result<(u32, Bytes)> {
        let req = Request::post(format!("http://{}{path}", self.emoji_addr))
            .header(header::CONTENT_TYPE, grpc::CONTENT_TYPE)
            .header(header::TE, "trailers")
            .body(Full::new(grpc::frame(&message)))?;
        let rsp = self.emoji.request(req).await?;
        anyhow::ensure!(
            rsp.status() == StatusCode::OK,
            "{path}: http status {}",
            rsp.status()
        );
        let (head, body) = rsp.into_parts();
        let body = body.collect().await.context(path.to_owned())?;
        // Errors may come "trailers-only", with grpc-status in the response headers.
        let status = body
            .trailers()
            .and_then(grpc_status)
            .or_else(|| grpc_status(&head.headers))
            .with_context(|| format!("{path}: response has no valid grpc-status"))?;
        if status != grpc::code::OK {
            return Ok((status, Bytes::new()));
        }
        let bytes = body.to_bytes();
        Ok((status, Bytes::copy_from_slice(grpc::unframe(&bytes)?)))
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

// === emoji ===

/// The `emoji.EmojiService` gRPC server.
async fn emoji(
    catalog: Arc<Vec<Emoji>>,
    req: Request<Incoming>,
) -> Result<Response<GrpcBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let Ok(body) = req.into_body().collect().await else {
        return Ok(grpc_response(Err(grpc::code::INVALID_ARGUMENT)));
    };
    let body = body.to_bytes();
    let reply = match path.as_str() {
        grpc::LIST_ALL => Ok(grpc::encode_list_response(&catalog)),
        grpc::FIND_BY_SHORTCODE => match grpc::unframe(&body).and_then(grpc::decode_find_request) {
            Ok(shortcode) => catalog
                .iter()
                .find(|e| e.shortcode == shortcode)
                .map(grpc::encode_find_response)
                .ok_or(grpc::code::NOT_FOUND),
            Err(_) => Err(grpc::code::INVALID_ARGUMENT),
        },
        _ => Err(grpc::code::UNIMPLEMENTED),
    };
    Ok(grpc_response(reply))
}

/// A 200 response with the message (if any) and `grpc-status` in trailers.
fn grpc_response(reply: Result<Vec<u8>, u32>) -> Response<GrpcBody> {
    let mut frames = Vec::with_capacity(2);
    let status = match reply {
        Ok(message) => {
            frames.push(Ok(Frame::data(grpc::frame(&message))));
            grpc::code::OK
        }
        Err(code) => code,
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    frames.push(Ok(Frame::trailers(trailers)));

    let mut rsp = Response::new(StreamBody::new(stream::iter(frames)));
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(grpc::CONTENT_TYPE),
    );
    rsp
}

// === voting ===

/// Counts votes and fails some of them, on purpose.
#[derive(Debug, Default)]
struct Voting {
    counts: Arc<Mutex<HashMap<String, u64>>>,
    /// Added to every request on the replica that is slow on purpose.
    extra_delay: Option<Duration>,
}

impl Voting {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<TextResponse, Infallible> {
        if let Some(delay) = self.extra_delay {
            tokio::time::sleep(delay).await;
        }
        let rsp = match (req.method(), req.uri().path()) {
            (&Method::GET, "/leaderboard") => self.leaderboard(),
            (&Method::POST, path) => match path.strip_prefix("/vote/") {
                Some(choice) if !choice.is_empty() => self.vote(choice),
                _ => text(StatusCode::NOT_FOUND, "not found\n"),
            },
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        };
        Ok(rsp)
    }

    fn vote(&self, choice: &str) -> TextResponse {
        if rand::thread_rng().gen_bool(VOTE_FAILURE_RATE) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "vote lost (on purpose)\n",
            );
        }
        // A poisoned lock only means another request panicked mid-increment; the counts
        // are still usable for a demo.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(choice.to_owned()).or_default() += 1;
        text(StatusCode::OK, "ok\n")
    }

    fn leaderboard(&self) -> TextResponse {
        let mut top: Vec<(String, u64)> = {
            let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let body: String = top.iter().map(|(k, v)| format!("{v} {k}\n")).collect();
        text(StatusCode::OK, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::topology::Topology;

    /// Starts the apps with no proxies on a free block of ports chosen from the pid, so
    /// parallel test runs (and other developers' demos) do not collide.
    async fn start_apps() -> (Topology, CancellationToken) {
        const FIRST: u16 = 10_000;
        const SLOTS: u16 = 250;
        const SPAN: u16 = 70;
        let first_slot = (std::process::id() % u32::from(SLOTS)) as u16;
        let base = (0..SLOTS)
            .map(|i| FIRST + ((first_slot + i) % SLOTS) * SPAN)
            .find(|&base| {
                (base..base + SPAN)
                    .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
            })
            .expect("a free block of loopback ports");
        let topology = Topology::new(base).expect("the test's base port fits");
        let shutdown = CancellationToken::new();
        start(&topology, false, &shutdown)
            .await
            .expect("apps start");
        (topology, shutdown)
    }

    async fn get(client: &AppClient, uri: String) -> (StatusCode, String) {
        let rsp = client
            .request(
                Request::get(uri)
                    .body(Full::default())
                    .expect("valid request"),
            )
            .await
            .expect("web answers");
        let status = rsp.status();
        let body = rsp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn web_serves_every_route_through_emoji_and_voting() {
        let (topology, shutdown) = start_apps().await;
        let web = topology.get(Workload::Web).app;
        let client = AppClient::http1(None);

        let (status, body) = get(&client, format!("http://{web}/api/list")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("🚀 rocket"), "{body}");

        let (status, _) = get(&client, format!("http://{web}/api/vote?choice=nope")).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "unknown emoji is emoji's NOT_FOUND"
        );

        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let (status, _) = get(&client, format!("http://{web}/api/vote?choice=joy")).await;
            seen.insert(status);
        }
        let expected = [StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR].into();
        assert_eq!(seen, expected, "votes succeed or fail with voting's 500");

        let (status, body) = get(&client, format!("http://{web}/api/leaderboard")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(" joy"), "{body}");
        shutdown.cancel();
    }
}
