//! Destination streams held open against the controller, as a fleet of proxies would:
//! `Get` streams spread over a few HTTP/2 connections, each read until the benchmark
//! ends, and a [`Tracker`] that times when an expected change arrives on them.

use anyhow::{bail, Context as _};
use mesh_api::destination::{
    destination_client::DestinationClient, update::Update as Kind, GetDestination, Update,
};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};
use tokio::{sync::oneshot, task::JoinSet};
use tonic::transport::Channel;

/// An endpoint change the benchmark made, awaited on the streams of its service.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Change {
    pub(crate) addr: SocketAddr,
    /// `true`: the endpoint must arrive in an `Add`; `false`: in a `Remove`.
    pub(crate) added: bool,
}

/// When a change reached the streams of its service, from the moment it was applied.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delivery {
    pub(crate) first: Duration,
    pub(crate) last: Duration,
}

struct Pending {
    change: Change,
    since: Instant,
    left: usize,
    first: Option<Duration>,
    done: Option<oneshot::Sender<Delivery>>,
}

/// Matches the updates every stream receives against the change awaited for its
/// service, if any.
#[derive(Default)]
pub(crate) struct Tracker {
    pending: Mutex<HashMap<usize, Pending>>,
    /// Updates after the first that matched no awaited change.
    pub(crate) unexpected: AtomicU64,
    /// Every update received, first messages included.
    pub(crate) updates: AtomicU64,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Awaits `change` on the `streams` streams of service `svc`, timed from `since`.
    pub(crate) fn expect(
        &self,
        svc: usize,
        change: Change,
        streams: usize,
        since: Instant,
    ) -> oneshot::Receiver<Delivery> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(
            svc,
            Pending {
                change,
                since,
                left: streams,
                first: None,
                done: Some(tx),
            },
        );
        rx
    }

    /// Stops awaiting a change for `svc` (it timed out).
    pub(crate) fn forget(&self, svc: usize) {
        self.lock().remove(&svc);
    }

    fn observe(&self, svc: usize, update: &Update, at: Instant) {
        self.updates.fetch_add(1, Relaxed);
        let mut pending = self.lock();
        let Some(p) = pending.get_mut(&svc) else {
            self.unexpected.fetch_add(1, Relaxed);
            return;
        };
        if !carries(update, p.change) {
            self.unexpected.fetch_add(1, Relaxed);
            return;
        }
        let elapsed = at.saturating_duration_since(p.since);
        let first = *p.first.get_or_insert(elapsed);
        p.left = p.left.saturating_sub(1);
        if p.left == 0 {
            if let Some(done) = p.done.take() {
                let _ = done.send(Delivery {
                    first,
                    last: elapsed,
                });
            }
            pending.remove(&svc);
        }
    }
}

/// Whether `update` says what `change` did.
fn carries(update: &Update, change: Change) -> bool {
    let wanted = mesh_api::net::TcpAddress::from(change.addr);
    match (&update.update, change.added) {
        (Some(Kind::Add(add)), true) => add
            .endpoints
            .iter()
            .any(|e| e.addr.as_ref() == Some(&wanted)),
        (Some(Kind::Remove(remove)), false) => remove.addrs.contains(&wanted),
        _ => false,
    }
}

/// The open streams. Dropping it cancels them all.
pub(crate) struct Streams {
    /// The readers; dropping the set aborts them, which resets the streams.
    _readers: JoinSet<()>,
    /// How long each stream took from the request to its first message, in the order
    /// they were opened.
    pub(crate) first_message: Vec<Duration>,
    /// From the first request to the last first message.
    pub(crate) open_all: Duration,
}

/// Opens `paths.len()` streams, `(service, path, expected endpoints)` each, over `conns`
/// HTTP/2 connections to `destination` (stream `i` on connection `i % conns`), all at
/// once, and waits for every first message, which must be an `Add` of the expected
/// number of endpoints. The streams are then read until dropped, every update going to
/// `tracker`.
pub(crate) async fn open(
    destination: SocketAddr,
    conns: usize,
    paths: Vec<(usize, String, usize)>,
    tracker: Arc<Tracker>,
) -> anyhow::Result<Streams> {
    let mut channels = Vec::with_capacity(conns);
    for _ in 0..conns.max(1) {
        // One `Channel` is one HTTP/2 connection; streams on it are multiplexed.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{destination}"))
            .context("destination URL")?
            .connect()
            .await
            .with_context(|| format!("connect to the destination service at {destination}"))?;
        channels.push(channel);
    }
    let n = paths.len();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, (svc, path, expected)) in paths.into_iter().enumerate() {
        let client = DestinationClient::new(channels[i % channels.len()].clone());
        let (tracker, opened_tx) = (tracker.clone(), opened_tx.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let mut stream = match first_message(client, &path, expected, &tracker).await {
                Ok(stream) => {
                    let _ = opened_tx.send((i, Ok(started.elapsed())));
                    stream
                }
                Err(e) => {
                    let _ = opened_tx.send((i, Err(format!("{e:#}"))));
                    return;
                }
            };
            while let Ok(Some(update)) = stream.message().await {
                tracker.observe(svc, &update, Instant::now());
            }
        });
    }
    drop(opened_tx);
    let mut first_message = Vec::with_capacity(n);
    let mut failures = Vec::new();
    while first_message.len() + failures.len() < n {
        match opened_rx.recv().await {
            Some((i, Ok(elapsed))) => first_message.push((i, elapsed)),
            Some((_, Err(e))) => failures.push(e),
            None => bail!("stream tasks ended before reporting"),
        }
    }
    let open_all = started.elapsed();
    if !failures.is_empty() {
        bail!(
            "{} of {n} streams failed to open; first: {}",
            failures.len(),
            failures[0]
        );
    }
    first_message.sort_by_key(|(i, _)| *i);
    Ok(Streams {
        _readers: tasks,
        first_message: first_message.into_iter().map(|(_, d)| d).collect(),
        open_all,
    })
}

/// Opens one stream and checks its first message.
async fn first_message(
    mut client: DestinationClient<Channel>,
    path: &str,
    expected: usize,
    tracker: &Tracker,
) -> anyhow::Result<tonic::Streaming<Update>> {
    let req = GetDestination {
        path: path.to_string(),
        context_token: r#"{"ns":"default"}"#.to_string(),
    };
    let mut stream = client
        .get(req)
        .await
        .with_context(|| format!("Get {path}"))?
        .into_inner();
    let first = stream
        .message()
        .await
        .with_context(|| format!("Get {path}: first message"))?
        .with_context(|| format!("Get {path}: ended before its first message"))?;
    tracker.updates.fetch_add(1, Relaxed);
    match &first.update {
        Some(Kind::Add(add)) if add.endpoints.len() == expected => Ok(stream),
        other => {
            bail!("Get {path}: first message {other:?}, expected an Add of {expected} endpoints")
        }
    }
}

/// Waits until the destination service gives `path` exactly `n` endpoints, so that the
/// proxy's first request to it finds it known.
pub(crate) async fn await_endpoints(
    destination: SocketAddr,
    path: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let wait = async {
        let mut client = DestinationClient::connect(format!("http://{destination}")).await?;
        let req = GetDestination {
            path: path.to_string(),
            context_token: r#"{"ns":"default"}"#.to_string(),
        };
        let mut stream = client.get(req).await?.into_inner();
        let mut endpoints = std::collections::HashSet::new();
        while let Some(update) = stream.message().await? {
            match update.update {
                Some(Kind::Add(add)) => endpoints.extend(add.endpoints.into_iter().map(|e| e.addr)),
                Some(Kind::Remove(remove)) => {
                    for addr in remove.addrs {
                        endpoints.remove(&Some(addr));
                    }
                }
                Some(Kind::NoEndpoints(_)) | None => endpoints.clear(),
            }
            if endpoints.len() == n {
                return Ok(());
            }
        }
        bail!("the stream ended")
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result.with_context(|| format!("waiting for {n} endpoints of {path}")),
        Err(_) => bail!("{path} did not have {n} endpoints within {timeout:?}"),
    }
}
