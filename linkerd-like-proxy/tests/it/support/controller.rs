//! A fake destination service for the proxy's discovery tests: the test sets what each
//! destination resolves to, and every `Get` stream sends the whole state first, then
//! what changed, as the real controller does. It can also inject raw updates, be
//! killed (every connection dropped, as a crash would) and be restarted on its port.

use mesh_api::{
    destination::{
        destination_server::{Destination, DestinationServer},
        update::Update as Kind,
        AddSet, DestinationProfile, Endpoint, GetDestination, NoEndpoints, RemoveSet, Update,
    },
    net::TcpAddress,
    policy::{
        inbound_policies_server::{InboundPolicies, InboundPoliciesServer},
        InboundPolicy, PortSpec,
    },
};
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    net::TcpListener,
    sync::{broadcast, mpsc, watch},
    task::JoinSet,
};
use tonic::{Request, Response, Status};

pub type Labels = BTreeMap<String, String>;

/// What a destination resolves to.
#[derive(Clone, Debug, PartialEq)]
pub enum Model {
    /// Streams for it never send anything.
    Silent,
    /// `NoEndpoints{exists: false}`.
    Unknown,
    /// Known, with these endpoints (none: `NoEndpoints{exists: true}`), and the
    /// destination's own labels.
    Endpoints(Labels, BTreeMap<SocketAddr, Labels>),
}

impl Model {
    pub fn endpoints(set: &[(&str, &str)], endpoints: &[(SocketAddr, &[(&str, &str)])]) -> Self {
        Model::Endpoints(
            labels(set),
            endpoints.iter().map(|(a, l)| (*a, labels(l))).collect(),
        )
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[derive(Default)]
struct State {
    paths: HashMap<String, watch::Sender<Model>>,
    /// Every `Get`, in order: (path, context token).
    gets: Vec<(String, String)>,
    /// Streams open now, by path.
    open: HashMap<String, usize>,
    /// Paths answered with InvalidArgument.
    refused: Vec<String>,
}

/// The fake's state outlives a kill, so a restarted controller serves the same model
/// unless the test changes it.
#[derive(Clone)]
pub struct FakeController {
    state: Arc<Mutex<State>>,
    changed: watch::Sender<()>,
    raw: broadcast::Sender<(String, Update)>,
}

/// A running fake; dropping it or calling [`Running::kill`] drops every connection.
pub struct Running {
    pub addr: SocketAddr,
    tasks: JoinSet<()>,
    conns: Arc<Mutex<JoinSet<()>>>,
}

impl Running {
    /// Stops accepting and drops every connection, as a crash would.
    pub fn kill(mut self) {
        self.tasks.abort_all();
        lock(&self.conns).abort_all();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.tasks.abort_all();
        lock(&self.conns).abort_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

impl FakeController {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            changed: watch::Sender::new(()),
            raw: broadcast::channel(16).0,
        }
    }

    /// Serves on `addr` (port 0: any).
    pub async fn serve(&self, addr: SocketAddr) -> Running {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the fake controller");
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<JoinSet<()>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let svc = DestinationServer::new(self.clone());
        let c = conns.clone();
        tasks.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // As tonic's server does: small gRPC frames must not wait on Nagle.
                let _ = stream.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
                lock(&c).spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        });
        Running { addr, tasks, conns }
    }

    fn sender(&self, path: &str) -> watch::Sender<Model> {
        lock(&self.state)
            .paths
            .entry(path.to_string())
            .or_insert_with(|| watch::Sender::new(Model::Unknown))
            .clone()
    }

    /// Sets what `path` resolves to; open streams send the difference.
    pub fn set(&self, path: &str, model: Model) {
        self.sender(path).send_replace(model);
    }

    /// Answers `Get(path)` with InvalidArgument, as the controller answers a path it
    /// cannot parse.
    pub fn refuse(&self, path: &str) {
        lock(&self.state).refused.push(path.to_string());
    }

    /// Sends `update` as is on every open stream for `path`.
    pub fn inject(&self, path: &str, update: Update) {
        let _ = self.raw.send((path.to_string(), update));
    }

    /// The `Get` requests received so far: (path, context token).
    pub fn gets(&self) -> Vec<(String, String)> {
        lock(&self.state).gets.clone()
    }

    pub fn gets_for(&self, path: &str) -> usize {
        self.gets().iter().filter(|(p, _)| p == path).count()
    }

    pub fn open_streams(&self, path: &str) -> usize {
        lock(&self.state).open.get(path).copied().unwrap_or(0)
    }

    /// Waits until `f` holds of the fake's state, or fails the test after 15s.
    pub async fn wait(&self, what: &str, f: impl Fn(&Self) -> bool) {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !f(self) {
            tokio::time::timeout_at(deadline, changed.changed())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for the controller to see {what}"))
                .unwrap();
        }
    }
}

impl Default for FakeController {
    fn default() -> Self {
        Self::new()
    }
}

/// The messages that take a stream from `last` to `now`.
fn diff(last: Option<&Model>, now: &Model) -> Vec<Update> {
    let msg = |k| Update { update: Some(k) };
    let add = |set: &Labels, eps: Vec<(&SocketAddr, &Labels)>| {
        msg(Kind::Add(AddSet {
            endpoints: eps
                .into_iter()
                .map(|(a, l)| Endpoint {
                    addr: Some(TcpAddress::from(*a)),
                    weight: 10_000,
                    metric_labels: l.clone().into_iter().collect(),
                    ..Default::default()
                })
                .collect(),
            metric_labels: set.clone().into_iter().collect(),
        }))
    };
    match (last, now) {
        (_, Model::Silent) => vec![],
        (Some(Model::Unknown), Model::Unknown) => vec![],
        (_, Model::Unknown) => vec![msg(Kind::NoEndpoints(NoEndpoints { exists: false }))],
        (_, Model::Endpoints(_, eps)) if eps.is_empty() => {
            if let Some(Model::Endpoints(_, before)) = last {
                if before.is_empty() {
                    return vec![];
                }
            }
            vec![msg(Kind::NoEndpoints(NoEndpoints { exists: true }))]
        }
        (Some(Model::Endpoints(_, before)), Model::Endpoints(set, eps)) => {
            let mut out = vec![];
            let gone: Vec<TcpAddress> = before
                .keys()
                .filter(|a| !eps.contains_key(a))
                .map(|a| TcpAddress::from(*a))
                .collect();
            if !gone.is_empty() {
                out.push(msg(Kind::Remove(RemoveSet { addrs: gone })));
            }
            let new: Vec<_> = eps
                .iter()
                .filter(|(a, l)| before.get(a) != Some(l))
                .collect();
            if !new.is_empty() {
                out.push(add(set, new));
            }
            out
        }
        (_, Model::Endpoints(set, eps)) => vec![add(set, eps.iter().collect())],
    }
}

/// The response stream; dropped when the client goes away.
pub struct Updates {
    rx: mpsc::Receiver<Result<Update, Status>>,
    path: String,
    fake: FakeController,
}

impl futures_util::Stream for Updates {
    type Item = Result<Update, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Updates {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.fake.state).open.get_mut(&self.path) {
            *n -= 1;
        }
        self.fake.changed.send_replace(());
    }
}

#[tonic::async_trait]
impl Destination for FakeController {
    type GetStream = Updates;
    type GetProfileStream = futures_util::stream::Pending<Result<DestinationProfile, Status>>;

    async fn get(&self, req: Request<GetDestination>) -> Result<Response<Updates>, Status> {
        let GetDestination {
            path,
            context_token,
        } = req.into_inner();
        {
            let mut s = lock(&self.state);
            s.gets.push((path.clone(), context_token));
            if s.refused.contains(&path) {
                drop(s);
                self.changed.send_replace(());
                return Err(Status::invalid_argument(format!("invalid path {path:?}")));
            }
            *s.open.entry(path.clone()).or_default() += 1;
        }
        self.changed.send_replace(());
        let mut model = self.sender(&path).subscribe();
        let mut raw = self.raw.subscribe();
        let (tx, rx) = mpsc::channel(16);
        let p = path.clone();
        tokio::spawn(async move {
            let mut last: Option<Model> = None;
            loop {
                let now = model.borrow_and_update().clone();
                for u in diff(last.as_ref(), &now) {
                    if tx.send(Ok(u)).await.is_err() {
                        return;
                    }
                }
                if now != Model::Silent {
                    last = Some(now);
                }
                tokio::select! {
                    r = model.changed() => if r.is_err() { return },
                    r = raw.recv() => match r {
                        Ok((path, u)) if path == p => {
                            if tx.send(Ok(u)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Updates {
            rx,
            path,
            fake: self.clone(),
        }))
    }

    async fn get_profile(
        &self,
        _: Request<GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        Ok(Response::new(futures_util::stream::pending()))
    }
}

/// A fake policy service (`mesh.policy.InboundPolicies`): the test sets each port's
/// policy, and every `Watch` stream of the port sends it, then each later one, as the
/// controller does. Served over TLS as the destination service is (the proxy reaches
/// both at `MESH_PROXY_DESTINATION_ADDR`).
#[derive(Clone, Default)]
pub struct FakePolicies {
    ports: Arc<Mutex<HashMap<u32, watch::Sender<Option<InboundPolicy>>>>>,
}

impl FakePolicies {
    fn sender(&self, port: u32) -> watch::Sender<Option<InboundPolicy>> {
        lock(&self.ports)
            .entry(port)
            .or_insert_with(|| watch::Sender::new(None))
            .clone()
    }

    /// Sends `policy` on every stream of `port`, and to streams opened later.
    pub fn set(&self, port: u16, policy: InboundPolicy) {
        self.sender(port.into()).send_replace(Some(policy));
    }

    /// Serves on loopback with `tls`.
    pub async fn serve(&self, tls: Arc<rustls::ServerConfig>) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<JoinSet<()>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let svc = InboundPoliciesServer::new(self.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let c = conns.clone();
        tasks.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
                let acceptor = acceptor.clone();
                lock(&c).spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        });
        Running { addr, tasks, conns }
    }
}

type PolicyStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<InboundPolicy, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl InboundPolicies for FakePolicies {
    type WatchStream = PolicyStream;

    async fn watch(&self, req: Request<PortSpec>) -> Result<Response<PolicyStream>, Status> {
        let mut rx = self.sender(req.into_inner().port).subscribe();
        rx.mark_changed();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                let current = rx.borrow_and_update().clone();
                if let Some(p) = current {
                    return Some((Ok(p), rx));
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
