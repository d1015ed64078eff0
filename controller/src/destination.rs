//! The `mesh.destination.Destination` gRPC service: `Get` streams endpoints and
//! `GetProfile` streams profiles, both kept live from the [`Index`]. The same server
//! (port 8086, same TLS) serves `mesh.policy.InboundPolicies` ([`crate::policy`]).
//!
//! A stream owns no queue of updates. It remembers the snapshot it last sent and,
//! whenever the client can take more, diffs that against the newest snapshot of its
//! target. A slow client therefore receives fewer, larger deltas instead of growing a
//! buffer, and it never holds up the index or any other stream: the index only
//! replaces the latest snapshot in a `watch` channel.

use crate::policy::PolicyService;
use crate::{
    index::{diff, Change, Endpoint, Index, ProfileInfo, Resource, Snapshot, Subscription},
    metrics::{Metrics, StreamKind},
};
use futures_util::{stream, Stream};
use mesh_api::destination::{
    self as api, destination_server::Destination, protocol_hint, update::Update as Kind,
    DestinationProfile, GetDestination, Update,
};
use mesh_api::policy::{inbound_policies_server::InboundPolicies as _, InboundPolicy, PortSpec};
use std::{collections::VecDeque, pin::Pin, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{server::TcpIncoming, Server};
use tonic::{Request, Response, Status};

/// The default retry budget of a service's profile, as Linkerd's.
const RETRY_RATIO: f32 = 0.2;
const MIN_RETRIES_PER_SECOND: u32 = 10;
const RETRY_TTL_MS: u64 = 10_000;

/// How long a `GetProfile` stream's first answer waits for the first list of
/// ServiceProfiles, which readiness does not wait for (their CRD may be missing): long
/// enough that a controller just started answers a proxy reconnecting to it with the
/// profile it had, short enough to stay well within a proxy's discovery timeout (1 s by
/// default). Past it, the stream answers the default and sends the profile once listed.
const PROFILES_SYNC_WAIT: Duration = Duration::from_millis(500);

/// How many streams one client connection may hold open. A proxy opens a stream per
/// destination it talks to, so hyper's default of 200 would stall a busy proxy.
const MAX_STREAMS_PER_CONNECTION: u32 = 10_000;

/// HTTP/2 pings find clients that vanished without closing their connection (a node
/// gone), so their streams and subscriptions do not linger.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `service` on `listener` until `shutdown` is cancelled, then drains: over
/// TLS with `tls` (when the identity service is on, so proxies can verify who tells
/// them where to send traffic), otherwise in plaintext.
pub async fn serve(
    listener: TcpListener,
    service: DestinationService,
    policy: PolicyService,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let server = Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    let routes = Routes::new(service, policy);
    match tls {
        Some(tls) => {
            let incoming = crate::tls_incoming::incoming(
                "destination",
                listener,
                tokio_rustls::TlsAcceptor::from(tls),
                shutdown.clone(),
            );
            server
                .serve_with_incoming_shutdown(routes, incoming, shutdown.cancelled_owned())
                .await
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            server
                .serve_with_incoming_shutdown(routes, incoming, shutdown.cancelled_owned())
                .await
        }
    }
}

/// The service's HTTP side: what tonic generates as `DestinationServer`, with one
/// difference that matters at thousands of streams: the response encoder starts with
/// a small buffer. tonic's default (8 KiB, kept for the life of a stream) alone would
/// cost 16 MiB at 2,000 mostly idle streams.
#[derive(Clone, Debug)]
pub struct Routes {
    inner: Arc<DestinationService>,
    policy: Arc<PolicyService>,
}

/// The encoder's initial buffer: a typical small update fits; a big one grows it.
const ENCODE_BUFFER: usize = 512;
/// Encoded messages are handed to HTTP/2 once this many bytes are waiting.
const YIELD_THRESHOLD: usize = 32 * 1024;

impl Routes {
    pub fn new(service: DestinationService, policy: PolicyService) -> Self {
        Self {
            inner: Arc::new(service),
            policy: Arc::new(policy),
        }
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for Routes
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        match req.uri().path() {
            "/mesh.destination.Destination/Get" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(SmallCodec::default());
                Ok(grpc.server_streaming(GetMethod(inner), req).await)
            }),
            "/mesh.destination.Destination/GetProfile" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(SmallCodec::default());
                Ok(grpc.server_streaming(GetProfileMethod(inner), req).await)
            }),
            "/mesh.policy.InboundPolicies/Watch" => {
                let policy = Arc::clone(&self.policy);
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(SmallCodec::default());
                    Ok(grpc.server_streaming(WatchMethod(policy), req).await)
                })
            }
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

impl tonic::server::NamedService for Routes {
    const NAME: &'static str = mesh_api::destination::destination_server::SERVICE_NAME;
}

struct GetMethod(Arc<DestinationService>);

impl tonic::server::ServerStreamingService<GetDestination> for GetMethod {
    type Response = Update;
    type ResponseStream = BoxStream<Update>;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, req: Request<GetDestination>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.get(req).await })
    }
}

struct GetProfileMethod(Arc<DestinationService>);

impl tonic::server::ServerStreamingService<GetDestination> for GetProfileMethod {
    type Response = DestinationProfile;
    type ResponseStream = BoxStream<DestinationProfile>;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, req: Request<GetDestination>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.get_profile(req).await })
    }
}

struct WatchMethod(Arc<PolicyService>);

impl tonic::server::ServerStreamingService<PortSpec> for WatchMethod {
    type Response = InboundPolicy;
    type ResponseStream = BoxStream<InboundPolicy>;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, req: Request<PortSpec>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.watch(req).await })
    }
}

/// `tonic_prost::ProstCodec` with a small initial encode buffer.
struct SmallCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::new(
            ENCODE_BUFFER,
            YIELD_THRESHOLD,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(tonic::codec::BufferSettings::default())
    }
}

/// The destination service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DestinationService {
    index: Index,
    metrics: Arc<Metrics>,
    /// Ends every open stream (shutdown): streams live as long as their clients, so
    /// the server would otherwise never finish draining.
    shutdown: CancellationToken,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Keeps the stream gauge honest however a stream ends (client gone, shutdown).
struct Opened {
    metrics: Arc<Metrics>,
    kind: StreamKind,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.metrics.stream_closed(self.kind);
    }
}

// === impl DestinationService ===

impl DestinationService {
    pub fn new(index: Index, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Self {
        Self {
            index,
            metrics,
            shutdown,
        }
    }

    async fn subscribe(
        &self,
        req: &GetDestination,
        kind: StreamKind,
    ) -> Result<(Subscription, Opened), Status> {
        let target = self
            .index
            .parse(&req.path, &req.context_token)
            .map_err(|error| {
                Status::invalid_argument(format!(
                    "invalid destination path {:?}: {error}",
                    req.path
                ))
            })?;
        // Before the first full sync the index knows nothing, and "unknown" or "no
        // endpoints" would make a proxy that reconnects after a controller restart drop
        // what it rightly knew. So a stream's first answer waits for the sync; the
        // proxy keeps serving with its last state meanwhile.
        let mut ready = self.index.ready();
        tokio::select! {
            synced = ready.wait_for(|r| *r) => {
                synced.map_err(|_| Status::unavailable("the controller is shutting down"))?;
            }
            () = self.shutdown.cancelled() => {
                return Err(Status::unavailable("the controller is shutting down"));
            }
        }
        tracing::debug!(path = %req.path, ?target, ?kind, "stream opened");
        let sub = self.index.subscribe(target);
        self.metrics.stream_opened(kind);
        let opened = Opened {
            metrics: Arc::clone(&self.metrics),
            kind,
        };
        Ok((sub, opened))
    }
}

#[tonic::async_trait]
impl Destination for DestinationService {
    type GetStream = BoxStream<Update>;
    type GetProfileStream = BoxStream<DestinationProfile>;

    async fn get(&self, req: Request<GetDestination>) -> Result<Response<Self::GetStream>, Status> {
        let (sub, opened) = self.subscribe(req.get_ref(), StreamKind::Get).await?;
        Ok(Response::new(Box::pin(updates(
            sub,
            opened,
            self.shutdown.clone(),
        ))))
    }

    async fn get_profile(
        &self,
        req: Request<GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let (sub, opened) = self.subscribe(req.get_ref(), StreamKind::Profile).await?;
        let listed = self.index.synced_once(Resource::ServiceProfiles);
        if tokio::time::timeout(PROFILES_SYNC_WAIT, listed)
            .await
            .is_err()
        {
            tracing::debug!(path = %req.get_ref().path, "ServiceProfiles not listed yet; answering with what the index has");
        }
        Ok(Response::new(Box::pin(profiles(
            sub,
            opened,
            self.shutdown.clone(),
        ))))
    }
}

/// What one `Get` stream holds between messages: its subscription, the snapshot it
/// last sent, and at most the two messages (`Remove`, `Add`) of one diff.
struct GetState {
    sub: Subscription,
    last: Option<Arc<Snapshot>>,
    pending: VecDeque<Change>,
    opened: Opened,
    shutdown: CancellationToken,
}

/// The `Get` response stream: the full state first, then deltas.
///
/// Changes are converted to protobuf only when the client is ready for them, so a
/// waiting stream holds `Arc`s into shared snapshots, not messages.
fn updates(
    sub: Subscription,
    opened: Opened,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Update, Status>> + Send {
    let state = GetState {
        sub,
        last: None,
        pending: VecDeque::with_capacity(2),
        opened,
        shutdown,
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if let Some(change) = st.pending.pop_front() {
                st.opened.metrics.update_sent();
                return Some((Ok(update(&change)), st));
            }
            let next = tokio::select! {
                next = st.sub.next() => next,
                () = st.shutdown.cancelled() => return None,
            };
            st.pending.extend(diff(st.last.as_deref(), &next));
            st.last = Some(next);
        }
    })
}

/// The `GetProfile` response stream: a profile first, then one each time it changes.
fn profiles(
    sub: Subscription,
    opened: Opened,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<DestinationProfile, Status>> + Send {
    let state = (sub, None::<ProfileInfo>, opened, shutdown);
    stream::unfold(state, |(mut sub, mut last, opened, shutdown)| async move {
        loop {
            let next = tokio::select! {
                next = sub.next() => next,
                () = shutdown.cancelled() => return None,
            };
            if last.as_ref() == Some(&next.profile) {
                continue;
            }
            let profile = profile(&next.profile);
            last = Some(next.profile.clone());
            opened.metrics.update_sent();
            return Some((Ok(profile), (sub, last, opened, shutdown)));
        }
    })
}

/// One change as the protobuf `Update`.
fn update(change: &Change) -> Update {
    let kind = match change {
        Change::Add { labels, endpoints } => Kind::Add(api::AddSet {
            endpoints: endpoints.iter().map(|ep| endpoint(ep)).collect(),
            metric_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }),
        Change::Remove(addrs) => Kind::Remove(api::RemoveSet {
            addrs: addrs.iter().map(|a| (*a).into()).collect(),
        }),
        Change::NoEndpoints { exists } => Kind::NoEndpoints(api::NoEndpoints { exists: *exists }),
    };
    Update { update: Some(kind) }
}

fn endpoint(ep: &Endpoint) -> api::Endpoint {
    // The hint is one of: an opaque port must not be detected even between meshed
    // proxies, so opaque wins over h2.
    let protocol = if ep.opaque {
        Some(protocol_hint::Protocol::Opaque(protocol_hint::Opaque {}))
    } else if ep.h2 {
        Some(protocol_hint::Protocol::H2(protocol_hint::H2 {}))
    } else {
        None
    };
    api::Endpoint {
        addr: Some(ep.addr.into()),
        weight: ep.weight,
        metric_labels: ep
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        tls_identity: ep.identity.as_ref().map(|id| api::TlsIdentity {
            name: id.name.to_string(),
            uri: id.uri.to_string(),
        }),
        protocol_hint: protocol.map(|protocol| api::ProtocolHint {
            protocol: Some(protocol),
        }),
    }
}

fn profile(info: &ProfileInfo) -> DestinationProfile {
    let default_budget = || api::RetryBudget {
        retry_ratio: RETRY_RATIO,
        min_retries_per_second: MIN_RETRIES_PER_SECOND,
        ttl_ms: RETRY_TTL_MS,
    };
    // A service has a profile, its own or the default one; a pod address has none.
    let (routes, retry_budget, dst_overrides) = match (&info.spec, &info.fully_qualified_name) {
        (Some(spec), _) => (
            spec.0.routes.clone(),
            Some(spec.0.retry_budget),
            spec.0.dst_overrides.clone(),
        ),
        (None, Some(_)) => (Vec::new(), Some(default_budget()), Vec::new()),
        (None, None) => (Vec::new(), None, Vec::new()),
    };
    DestinationProfile {
        fully_qualified_name: info
            .fully_qualified_name
            .as_deref()
            .unwrap_or_default()
            .to_string(),
        opaque_protocol: info.opaque,
        routes,
        retry_budget,
        dst_overrides,
        endpoint: info.endpoint.as_deref().map(endpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Identity, DEFAULT_WEIGHT};
    use std::collections::BTreeMap;

    fn ep(h2: bool, opaque: bool) -> Endpoint {
        Endpoint {
            addr: "192.0.2.1:8080".parse().unwrap(),
            weight: DEFAULT_WEIGHT,
            labels: BTreeMap::from([(Arc::from("pod"), Arc::from("web-1"))]),
            identity: h2.then(|| Identity::for_service_account("ns", "sa", "cluster.local")),
            h2,
            opaque,
        }
    }

    fn hint(ep: &api::Endpoint) -> Option<&protocol_hint::Protocol> {
        ep.protocol_hint.as_ref().and_then(|h| h.protocol.as_ref())
    }

    #[test]
    fn endpoints_on_the_wire() {
        let meshed = endpoint(&ep(true, false));
        assert!(matches!(
            hint(&meshed),
            Some(protocol_hint::Protocol::H2(_))
        ));
        assert_eq!(
            meshed.tls_identity.as_ref().unwrap().uri,
            "spiffe://cluster.local/ns/ns/sa/sa"
        );
        assert_eq!(meshed.weight, 10_000);
        assert_eq!(
            meshed.metric_labels.get("pod").map(String::as_str),
            Some("web-1")
        );

        // An opaque port is never detected, meshed or not; the identity stays.
        let opaque = endpoint(&ep(true, true));
        assert!(matches!(
            hint(&opaque),
            Some(protocol_hint::Protocol::Opaque(_))
        ));
        assert!(opaque.tls_identity.is_some());

        let plain = endpoint(&ep(false, false));
        assert_eq!(plain.protocol_hint, None);
        assert_eq!(plain.tls_identity, None);
    }

    #[test]
    fn changes_on_the_wire() {
        let rm = update(&Change::Remove(vec!["192.0.2.1:80".parse().unwrap()]));
        let Some(Kind::Remove(rm)) = rm.update else {
            panic!("{rm:?}")
        };
        assert_eq!(
            rm.addrs,
            vec![mesh_api::net::TcpAddress::from(
                "192.0.2.1:80".parse::<std::net::SocketAddr>().unwrap()
            )]
        );
        let none = update(&Change::NoEndpoints { exists: true });
        assert_eq!(
            none.update,
            Some(Kind::NoEndpoints(api::NoEndpoints { exists: true }))
        );
    }

    /// `GetProfile` needs the index ready (Services, EndpointSlices, Pods) and waits
    /// for the first profile list at most `PROFILES_SYNC_WAIT`: never forever (their
    /// CRD may be missing), not at all once profiles are listed.
    #[tokio::test(start_paused = true)]
    async fn get_profile_waits_for_profiles_briefly_and_never_hangs() {
        use futures_util::StreamExt as _;
        let index = Index::new("cluster.local", "cluster.local");
        index.ready_once_synced(&crate::k8s::REQUIRED);
        for resource in crate::k8s::REQUIRED {
            index.synced(resource);
        }
        let service = DestinationService::new(
            index.clone(),
            Arc::new(Metrics::default()),
            CancellationToken::new(),
        );
        let ask = || {
            service.get_profile(Request::new(GetDestination {
                path: "web.ns.svc.cluster.local:80".into(),
                context_token: String::new(),
            }))
        };

        let started = tokio::time::Instant::now();
        let mut stream = tokio::time::timeout(Duration::from_secs(60), ask())
            .await
            .expect("answered, though profiles never synced")
            .expect("a stream")
            .into_inner();
        assert_eq!(started.elapsed(), PROFILES_SYNC_WAIT);
        let first = stream.next().await.expect("a profile").expect("no error");
        assert_eq!(first.fully_qualified_name, "");

        index.synced(Resource::ServiceProfiles);
        let started = tokio::time::Instant::now();
        ask().await.expect("a stream");
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "profiles listed: no wait"
        );
    }

    #[test]
    fn profiles_on_the_wire() {
        assert_eq!(
            profile(&ProfileInfo::default()),
            DestinationProfile::default()
        );
        let svc = profile(&ProfileInfo {
            fully_qualified_name: Some("web.ns.svc.cluster.local".into()),
            opaque: true,
            endpoint: None,
            spec: None,
        });
        assert_eq!(svc.fully_qualified_name, "web.ns.svc.cluster.local");
        assert!(svc.opaque_protocol);
        assert_eq!(
            svc.retry_budget,
            Some(api::RetryBudget {
                retry_ratio: 0.2,
                min_retries_per_second: 10,
                ttl_ms: 10_000,
            })
        );
        let pod = profile(&ProfileInfo {
            fully_qualified_name: None,
            opaque: false,
            endpoint: Some(Arc::new(ep(true, false))),
            spec: None,
        });
        assert!(pod.endpoint.is_some());
        assert_eq!(pod.retry_budget, None);
    }
}
