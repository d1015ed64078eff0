//! The tap API: `mesh.tap.TapApi/TapByResource` on `--tap-addr` (8088).
//!
//! A caller names resources (a namespace, a workload, a pod or a service); the
//! controller finds their meshed, running pods in the index, opens
//! `mesh.tap.Tap/Observe` on each pod's proxy (`Pod::tap_addr`) over mesh TLS,
//! presenting its own tap identity (`mesh-tap.mesh-system`, the one client a proxy's
//! tap server serves), and merges their events into one stream. The requests tapped
//! are limited to `max_rps` a second over all the pods, split evenly (at least one
//! each); the limit is kept here, per pod, as each pod's events arrive. Each event
//! is given the tapped pod's name on the pod's own side (the destination of an inbound
//! request, the source of an outbound one), which its proxy knows only as an address.
//! The merged stream ends when the caller goes away, and each pod's stream with it.
//!
//! The controller's tap certificate is issued by its own CA at start and renewed
//! before it expires (`identity::SelfIssued`), in file and cluster mode alike, so tap
//! runs only with the identity service on; without it every call is refused with the
//! reason. Who may tap is decided by an [`Authorize`] (cluster mode: a TokenReview of
//! the caller's bearer token, then a SubjectAccessReview; file mode: anyone who can
//! reach the port).

use crate::identity::{Ca, SelfIssued};
use crate::index::{Identity, Index, ObjKey, Pod};
use mesh_api::tap::{
    observe_request::{r#match as m, Match},
    tap_api_server::{TapApi, TapApiServer},
    tap_client::TapClient,
    tap_event::{
        http::{Event, StreamId},
        ProxyDirection,
    },
    ObserveRequest, ResourceSelection, TapByResourceRequest, TapEvent,
};
use mesh_core::stats::ResourceKind;
use std::{collections::HashSet, future::Future, pin::Pin, sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{transport::Endpoint, Request, Response, Status};

/// The requests a second a call taps over all its pods when it does not say.
pub const DEFAULT_MAX_RPS: u32 = 100;

/// How long opening one pod's stream (TCP, mesh TLS, HTTP/2, `Observe`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Events buffered between the pods' streams and the caller: a caller slower than
/// its pods loses events (counted nowhere but the proxies' own drops), never slows
/// them.
const MERGED_BUFFER: usize = 1024;

/// Ids of requests whose events are dropped by the rate limit, kept per pod until
/// their end; a proxy that dropped an end cannot make this grow without bound.
const MAX_DROPPED_IDS: usize = 16 * 1024;

/// The metadata key a caller's bearer token comes in (`Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

/// What a [`Authorize`] returns.
pub type Authorization<'a> = Pin<Box<dyn Future<Output = Result<(), Status>> + Send + 'a>>;

/// Decides whether the caller holding `token` (the bearer token it sent, if any) may
/// tap resources of `namespace`; a refusal is the `Status` the caller gets.
pub trait Authorize: Send + Sync + 'static {
    fn authorize<'a>(&'a self, token: Option<&'a str>, namespace: &'a str) -> Authorization<'a>;
}

/// The tap API's service.
#[derive(Clone)]
pub struct TapService {
    index: Index,
    /// The mesh TLS client configuration with the tap identity; `None` when the
    /// controller runs without identity (the string says so).
    client: Result<Arc<rustls::ClientConfig>, String>,
    authorize: Option<Arc<dyn Authorize>>,
    shutdown: CancellationToken,
}

impl TapService {
    /// `client` is [`client_config`]'s, or why tap is off.
    pub fn new(
        index: Index,
        client: Result<Arc<rustls::ClientConfig>, String>,
        authorize: Option<Arc<dyn Authorize>>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            index,
            client,
            authorize,
            shutdown,
        }
    }
}

/// Serves the tap API on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    service: TapService,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(
            TapApiServer::new(service),
            incoming,
            shutdown.cancelled_owned(),
        )
        .await
}

/// The mesh TLS client configuration the tap API opens proxies' tap servers with:
/// TLS 1.3, `h2`, the server verified against the CA's trust anchors (for the name
/// given at each connection: the pod's identity), and the controller's own
/// certificate for `cert`'s name, renewed by it before expiry.
pub fn client_config(ca: &Ca, cert: Arc<SelfIssued>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for anchor in ca.anchors() {
        roots
            .add(rustls_pki_types::CertificateDer::from(anchor.clone()))
            .map_err(|e| format!("trust anchor: {e}"))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[tonic::async_trait]
impl TapApi for TapService {
    type TapByResourceStream = ReceiverStream<Result<TapEvent, Status>>;

    async fn tap_by_resource(
        &self,
        req: Request<TapByResourceRequest>,
    ) -> Result<Response<Self::TapByResourceStream>, Status> {
        let token = bearer(req.metadata())?;
        let events = self.open(token.as_deref(), req.into_inner()).await?;
        Ok(Response::new(ReceiverStream::new(events)))
    }
}

impl TapService {
    /// Authorizes the caller holding `token` for `req`'s target, opens every selected
    /// pod's stream and merges them: what `TapByResource` answers, and what the HTTP
    /// API's `/api/top` reads. The events stop when the receiver is dropped.
    pub async fn open(
        &self,
        token: Option<&str>,
        req: TapByResourceRequest,
    ) -> Result<mpsc::Receiver<Result<TapEvent, Status>>, Status> {
        let target = req
            .target
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("no target: expected TYPE[/NAME]"))?;
        let selection = Selection::parse(target)?;
        if let Some(authorize) = &self.authorize {
            authorize.authorize(token, &selection.namespace).await?;
        }
        let client = self.client.clone().map_err(Status::failed_precondition)?;
        let pods = selection.pods(&self.index)?;
        let max_rps = if req.max_rps == 0 {
            DEFAULT_MAX_RPS
        } else {
            req.max_rps
        };
        let per_pod = (max_rps / u32::try_from(pods.len()).unwrap_or(u32::MAX)).max(1);
        // Each proxy taps its share only, so it makes no events dropped here; the
        // share is kept here too, for proxies that ignore it.
        let observe = ObserveRequest {
            limit: u32::MAX,
            r#match: observe_match(req.r#match, req.to.as_ref(), &selection.namespace)?,
            extract: req.extract,
            max_rps: per_pod,
        };
        let trust_domain = self.index.trust_domain().to_string();

        // Every pod's stream is open before the caller is answered, so that the
        // caller sees the requests that follow its answer, and an error if no pod
        // can be tapped at all.
        let opened = futures_util::future::join_all(pods.iter().map(|pod| {
            let client = Arc::clone(&client);
            let observe = observe.clone();
            let trust_domain = trust_domain.clone();
            async move {
                let result = open(pod, &trust_domain, client, observe).await;
                (pod, result)
            }
        }))
        .await;
        let (tx, rx) = mpsc::channel(MERGED_BUFFER);
        let mut first_error = None;
        let mut streams = 0;
        for (pod, result) in opened {
            match result {
                Ok(events) => {
                    streams += 1;
                    tokio::spawn(forward(
                        pod.key.clone(),
                        own_labels(pod),
                        events,
                        Limit::new(per_pod),
                        tx.clone(),
                        self.shutdown.clone(),
                    ));
                }
                Err(error) => {
                    let pod = &pod.key;
                    tracing::warn!(%pod, %error, "cannot tap a pod");
                    first_error.get_or_insert(format!("{pod}: {error}"));
                }
            }
        }
        if streams == 0 {
            return Err(Status::unavailable(format!(
                "cannot tap any pod of {}: {}",
                selection,
                first_error.unwrap_or_default()
            )));
        }
        tracing::info!(target = %selection, pods = streams, rps_per_pod = per_pod, "tap started");
        Ok(rx)
    }
}

/// Cluster mode: the caller's bearer token goes to a TokenReview (the API server's
/// own audience: a user's kubeconfig token), and the user it names to a
/// SubjectAccessReview for verb `watch` on resource `tap` of group `tap.mesh.rs` in the
/// target's namespace, so RBAC decides who may tap what.
pub struct KubeAuthorizer {
    client: Result<kube::Client, String>,
}

/// The SubjectAccessReview's attributes: what a Role grants to let a user tap.
pub const RBAC_GROUP: &str = "tap.mesh.rs";
pub const RBAC_RESOURCE: &str = "tap";
pub const RBAC_VERB: &str = "watch";

impl KubeAuthorizer {
    /// `client`: the controller's Kubernetes client, or why it has none (every call is
    /// then refused with that reason).
    pub fn new(client: Result<kube::Client, String>) -> Self {
        Self { client }
    }
}

impl Authorize for KubeAuthorizer {
    fn authorize<'a>(&'a self, token: Option<&'a str>, namespace: &'a str) -> Authorization<'a> {
        use k8s_openapi::api::authorization::v1 as authz;
        Box::pin(async move {
            let client = self.client.as_ref().map_err(|e| {
                Status::unavailable(format!("cannot authorize: no Kubernetes client: {e}"))
            })?;
            let token = token.ok_or_else(|| {
                Status::unauthenticated(
                    "the tap API needs your Kubernetes bearer token (`authorization: Bearer <token>`; `mesh tap` sends your kubeconfig's)",
                )
            })?;
            let status = crate::identity::token::review(client, token, None)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?
                .ok_or_else(|| Status::unavailable("the TokenReview came back without a status"))?;
            if status.authenticated != Some(true) {
                return Err(Status::unauthenticated(format!(
                    "the bearer token was refused: {}",
                    status.error.as_deref().unwrap_or("not authenticated")
                )));
            }
            let user = status.user.unwrap_or_default();
            let username = user.username.clone().unwrap_or_default();
            let review = authz::SubjectAccessReview {
                spec: authz::SubjectAccessReviewSpec {
                    user: user.username,
                    groups: user.groups,
                    uid: user.uid,
                    extra: user.extra,
                    resource_attributes: Some(authz::ResourceAttributes {
                        namespace: Some(namespace.to_string()),
                        verb: Some(RBAC_VERB.into()),
                        group: Some(RBAC_GROUP.into()),
                        resource: Some(RBAC_RESOURCE.into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let reviewed = kube::Api::<authz::SubjectAccessReview>::all(client.clone())
                .create(&kube::api::PostParams::default(), &review)
                .await
                .map_err(|e| Status::unavailable(format!("cannot review access: {e}")))?;
            let status = reviewed.status.unwrap_or_default();
            if status.allowed {
                return Ok(());
            }
            let reason = status
                .reason
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "no RBAC rule allows it".into());
            tracing::info!(user = %username, %namespace, %reason, "tap refused");
            Err(Status::permission_denied(format!(
                "{username} may not tap namespace {namespace} (verb {RBAC_VERB} on resource {RBAC_RESOURCE} of group {RBAC_GROUP}): {reason}"
            )))
        })
    }
}

/// The bearer token in the request's metadata, if any.
fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<Option<String>, Status> {
    bearer_of(metadata.get(AUTHORIZATION).map(|v| v.as_bytes()))
}

/// The bearer token of an `authorization` value (gRPC metadata or an HTTP header):
/// `None` without one, an error for a value that is not `Bearer <token>`.
pub fn bearer_of(value: Option<&[u8]>) -> Result<Option<String>, Status> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = std::str::from_utf8(value)
        .ok()
        .filter(|v| v.is_ascii())
        .ok_or_else(|| Status::unauthenticated("the authorization value is not ASCII"))?;
    match value.strip_prefix("Bearer ") {
        Some(token) if !token.trim().is_empty() => Ok(Some(token.trim().to_string())),
        _ => Err(Status::unauthenticated(
            "the authorization value must be `Bearer <token>`",
        )),
    }
}

/// A pod's `Observe` stream, over mesh TLS to its proxy's tap server, which must
/// prove the pod's identity.
async fn open(
    pod: &Pod,
    trust_domain: &str,
    client: Arc<rustls::ClientConfig>,
    observe: ObserveRequest,
) -> Result<tonic::Streaming<TapEvent>, String> {
    let addr = pod
        .tap_addr()
        .ok_or_else(|| "the pod has no IP".to_string())?;
    let identity =
        Identity::for_service_account(&pod.key.namespace, &pod.service_account, trust_domain);
    let server_name = rustls_pki_types::ServerName::try_from(identity.name.to_string())
        .map_err(|e| format!("identity {:?} is not a DNS name: {e}", identity.name))?;
    // `SocketAddr`'s display brackets IPv6, as a URI wants.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = mesh_api::tls::connect_lazy(&endpoint, client, server_name);
    let mut client = TapClient::new(channel);
    match tokio::time::timeout(CONNECT_TIMEOUT, client.observe(observe)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(format!(
            "{addr}: {} ({:?})",
            status.message(),
            status.code()
        )),
        Err(_) => Err(format!("{addr}: no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// The labels of the tapped pod itself, as `dst_*` labels name a pod: its namespace,
/// name, owner (`deployment: web`) and service account. A proxy knows the labels of
/// the endpoints it sends to, not its own; the controller knows which pod each stream
/// comes from, and fills them in.
fn own_labels(pod: &Pod) -> Vec<(String, String)> {
    let mut labels = vec![
        ("namespace".to_string(), pod.key.namespace.to_string()),
        ("pod".to_string(), pod.key.name.to_string()),
    ];
    if let Some((kind, name)) = &pod.owner {
        labels.push((kind.to_string(), name.to_string()));
    }
    if !pod.service_account.is_empty() {
        labels.push((
            "serviceaccount".to_string(),
            pod.service_account.to_string(),
        ));
    }
    labels
}

/// Gives an event the tapped pod's own labels on its side: the destination of an
/// inbound request, the source of an outbound one. What the proxy set stays.
fn label_own_side(event: &mut TapEvent, own: &[(String, String)]) {
    let side = match event.proxy_direction() {
        ProxyDirection::Inbound => &mut event.destination_meta,
        ProxyDirection::Outbound => &mut event.source_meta,
        ProxyDirection::Unknown => return,
    };
    let meta = side.get_or_insert_with(Default::default);
    for (k, v) in own {
        meta.labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// Passes a pod's events to the merged stream, within the pod's limit, until the
/// pod's stream ends, the caller goes away or the controller stops; each event with
/// the pod's own labels (`own`) on its side.
async fn forward(
    pod: ObjKey,
    own: Vec<(String, String)>,
    mut events: tonic::Streaming<TapEvent>,
    mut limit: Limit,
    tx: mpsc::Sender<Result<TapEvent, Status>>,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            next = events.message() => next,
            () = tx.closed() => return,
            () = shutdown.cancelled() => return,
        };
        match next {
            Ok(Some(mut event)) => {
                if !limit.admit(&event, Instant::now()) {
                    continue;
                }
                label_own_side(&mut event, &own);
                // A full buffer: the caller is slower than the pods; drop the event.
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Ok(event)) {
                    return;
                }
            }
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(%pod, error = %status, "a pod's tap stream ended");
                return;
            }
        }
    }
}

/// A pod's share of `max_rps`: at most `rps` requests whose first event arrived in
/// the same second, and the later events of those requests only.
struct Limit {
    rps: u32,
    window: Option<Instant>,
    in_window: u32,
    dropped: HashSet<(u32, u64)>,
}

impl Limit {
    fn new(rps: u32) -> Self {
        Self {
            rps,
            window: None,
            in_window: 0,
            dropped: HashSet::new(),
        }
    }

    /// Whether `event` goes to the caller.
    fn admit(&mut self, event: &TapEvent, now: Instant) -> bool {
        let Some(event) = event.http.as_ref().and_then(|h| h.event.as_ref()) else {
            return true;
        };
        let (id, first, last) = match event {
            Event::RequestInit(e) => (e.id.as_ref(), true, false),
            Event::ResponseInit(e) => (e.id.as_ref(), false, false),
            Event::ResponseEnd(e) => (e.id.as_ref(), false, true),
        };
        let id = id.map(|StreamId { base, stream }| (*base, *stream));
        if !first {
            let dropped = match (id, last) {
                (Some(id), true) => self.dropped.remove(&id),
                (Some(id), false) => self.dropped.contains(&id),
                (None, _) => false,
            };
            return !dropped;
        }
        if self
            .window
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            self.window = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.rps {
            self.in_window += 1;
            return true;
        }
        if let Some(id) = id {
            if self.dropped.len() >= MAX_DROPPED_IDS {
                self.dropped.clear();
            }
            self.dropped.insert(id);
        }
        false
    }
}

/// A call's target, read and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Selection {
    kind: ResourceKind,
    /// The namespace the target is in (a namespace's own name for a namespace).
    namespace: String,
    name: Option<String>,
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) if self.kind != ResourceKind::Namespace => {
                write!(f, "{}/{} in namespace {}", self.kind, name, self.namespace)
            }
            _ if self.kind == ResourceKind::Namespace => {
                write!(f, "namespace {}", self.namespace)
            }
            _ => write!(f, "every {} in namespace {}", self.kind, self.namespace),
        }
    }
}

impl Selection {
    fn parse(target: &ResourceSelection) -> Result<Self, Status> {
        let kind: ResourceKind =
            target
                .kind
                .parse()
                .map_err(|e: mesh_core::stats::InvalidSelector| {
                    Status::invalid_argument(e.to_string())
                })?;
        let name = (!target.name.is_empty()).then(|| target.name.clone());
        let namespace = match (kind, &name) {
            (ResourceKind::Authority, _) => {
                return Err(Status::invalid_argument(
                    "an authority has no pods to tap; tap the pods that call it, with a filter on :authority",
                ))
            }
            (ResourceKind::Namespace, Some(name)) => name.clone(),
            _ => target.namespace.clone(),
        };
        if namespace.is_empty() {
            return Err(Status::invalid_argument(format!(
                "no namespace for {}: give one",
                target.kind
            )));
        }
        if kind == ResourceKind::Service && name.is_none() {
            return Err(Status::invalid_argument(
                "a service target needs a name (svc/NAME)",
            ));
        }
        Ok(Self {
            kind,
            namespace,
            name,
        })
    }

    /// The running, meshed pods the selection names, or why there are none.
    fn pods(&self, index: &Index) -> Result<Vec<Pod>, Status> {
        let candidates: Vec<Pod> = match self.kind {
            ResourceKind::Service => {
                let name = self.name.as_deref().unwrap_or_default();
                index
                    .service_pods(&ObjKey::new(&self.namespace, name))
                    .ok_or_else(|| Status::not_found(format!("no {self}")))?
            }
            kind => {
                let mut pods: Vec<Pod> = index
                    .pods()
                    .into_iter()
                    .filter(|pod| *pod.key.namespace == *self.namespace)
                    .filter(|pod| match kind {
                        ResourceKind::Namespace => true,
                        ResourceKind::Pod => {
                            self.name.as_deref().is_none_or(|n| *pod.key.name == *n)
                        }
                        _ => pod.owner.as_ref().is_some_and(|(owner_kind, owner)| {
                            Some(&**owner_kind) == kind.workload()
                                && self.name.as_deref().is_none_or(|n| **owner == *n)
                        }),
                    })
                    .collect();
                pods.sort_by(|a, b| a.key.cmp(&b.key));
                pods
            }
        };
        if candidates.is_empty() {
            return Err(Status::not_found(match self.kind {
                ResourceKind::Service => format!("{self} has no pods"),
                _ => format!("no {self}"),
            }));
        }
        let total = candidates.len();
        let meshed: Vec<Pod> = candidates
            .into_iter()
            .filter(|pod| pod.running && pod.meshed && pod.tap_addr().is_some())
            .collect();
        if meshed.is_empty() {
            return Err(Status::not_found(format!(
                "{self}: none of its {total} pods is running with a mesh proxy"
            )));
        }
        Ok(meshed)
    }
}

/// The proxies' match: the caller's, and with `to`, the destination's labels.
fn observe_match(
    given: Option<Match>,
    to: Option<&ResourceSelection>,
    namespace: &str,
) -> Result<Option<Match>, Status> {
    let Some(to) = to else {
        return Ok(given);
    };
    let kind: ResourceKind = to
        .kind
        .parse()
        .map_err(|e: mesh_core::stats::InvalidSelector| {
            Status::invalid_argument(format!("to: {e}"))
        })?;
    if to.name.is_empty() {
        return Err(Status::invalid_argument("to: expected TYPE/NAME"));
    }
    let namespace = if to.namespace.is_empty() {
        namespace
    } else {
        &to.namespace
    };
    let label = |key: &str, value: &str| Match {
        r#match: Some(m::Match::DestinationLabel(m::Label {
            key: key.into(),
            value: value.into(),
        })),
    };
    let mut all = match kind {
        ResourceKind::Namespace => vec![label("namespace", &to.name)],
        ResourceKind::Pod => vec![label("pod", &to.name), label("namespace", namespace)],
        ResourceKind::Service => vec![label("service", &to.name), label("namespace", namespace)],
        ResourceKind::Authority => {
            return Err(Status::invalid_argument(
                "to: an authority is matched with --authority",
            ))
        }
        kind => match kind.workload() {
            Some(workload) => vec![label(workload, &to.name), label("namespace", namespace)],
            None => return Err(Status::invalid_argument(format!("to: cannot match {kind}"))),
        },
    };
    all.extend(given);
    Ok(Some(Match {
        r#match: Some(m::Match::All(m::Seq { matches: all })),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::tap::tap_event;

    fn request(stream: u64) -> TapEvent {
        event(Event::RequestInit(tap_event::http::RequestInit {
            id: Some(StreamId { base: 1, stream }),
            ..Default::default()
        }))
    }

    fn end(stream: u64) -> TapEvent {
        event(Event::ResponseEnd(tap_event::http::ResponseEnd {
            id: Some(StreamId { base: 1, stream }),
            ..Default::default()
        }))
    }

    fn event(e: Event) -> TapEvent {
        TapEvent {
            http: Some(tap_event::Http { event: Some(e) }),
            ..Default::default()
        }
    }

    #[test]
    fn the_tapped_pods_own_labels_go_on_its_side() {
        let own = vec![
            ("pod".to_string(), "web-0".to_string()),
            ("deployment".to_string(), "web".to_string()),
        ];
        let mut inbound = request(1);
        inbound.proxy_direction = tap_event::ProxyDirection::Inbound as i32;
        label_own_side(&mut inbound, &own);
        let dst = &inbound.destination_meta.as_ref().unwrap().labels;
        assert_eq!(dst.get("pod").map(String::as_str), Some("web-0"));
        assert!(
            inbound.source_meta.is_none(),
            "the client is not the tapped pod"
        );

        let mut outbound = request(2);
        outbound.proxy_direction = tap_event::ProxyDirection::Outbound as i32;
        outbound.destination_meta = Some(tap_event::EndpointMeta {
            labels: [("pod".to_string(), "emoji-0".to_string())]
                .into_iter()
                .collect(),
            identity: String::new(),
        });
        outbound.source_meta = Some(tap_event::EndpointMeta {
            labels: [("pod".to_string(), "as-the-proxy-said".to_string())]
                .into_iter()
                .collect(),
            identity: String::new(),
        });
        label_own_side(&mut outbound, &own);
        let src = &outbound.source_meta.as_ref().unwrap().labels;
        assert_eq!(
            src.get("pod").map(String::as_str),
            Some("as-the-proxy-said")
        );
        assert_eq!(src.get("deployment").map(String::as_str), Some("web"));
        let dst = &outbound.destination_meta.as_ref().unwrap().labels;
        assert_eq!(dst.get("pod").map(String::as_str), Some("emoji-0"));

        let mut unknown = request(3);
        label_own_side(&mut unknown, &own);
        assert!(unknown.source_meta.is_none() && unknown.destination_meta.is_none());
    }

    #[test]
    fn the_limit_drops_whole_requests_past_the_rate() {
        let mut limit = Limit::new(2);
        let t0 = Instant::now();
        assert!(limit.admit(&request(1), t0));
        assert!(limit.admit(&request(2), t0));
        assert!(!limit.admit(&request(3), t0));
        assert!(limit.admit(&end(1), t0));
        assert!(
            !limit.admit(&end(3), t0),
            "a dropped request's end is dropped"
        );
        assert!(limit.dropped.is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert!(limit.admit(&request(4), t1), "a new second");
    }

    #[test]
    fn targets_are_checked() {
        let sel = |kind: &str, ns: &str, name: &str| {
            Selection::parse(&ResourceSelection {
                namespace: ns.into(),
                kind: kind.into(),
                name: name.into(),
                label_selector: String::new(),
            })
        };
        assert_eq!(
            sel("deploy", "demo", "web").unwrap(),
            Selection {
                kind: ResourceKind::Deployment,
                namespace: "demo".into(),
                name: Some("web".into())
            }
        );
        assert_eq!(sel("ns", "", "demo").unwrap().namespace, "demo");
        for (kind, ns, name, why) in [
            ("gizmo", "demo", "web", "unknown resource type"),
            ("au", "demo", "web", "authority has no pods"),
            ("deploy", "", "web", "no namespace"),
            ("svc", "demo", "", "needs a name"),
        ] {
            let e = sel(kind, ns, name).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{kind}");
            assert!(e.message().contains(why), "{kind}: {}", e.message());
        }
    }

    #[test]
    fn to_becomes_destination_labels() {
        let to = ResourceSelection {
            kind: "deploy".into(),
            name: "voting".into(),
            ..Default::default()
        };
        let Some(Match {
            r#match: Some(m::Match::All(seq)),
        }) = observe_match(None, Some(&to), "demo").unwrap()
        else {
            panic!("expected all");
        };
        let labels: Vec<_> = seq
            .matches
            .iter()
            .map(|m| match &m.r#match {
                Some(m::Match::DestinationLabel(l)) => (l.key.as_str(), l.value.as_str()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(labels, [("deployment", "voting"), ("namespace", "demo")]);
        let no_name = ResourceSelection {
            kind: "deploy".into(),
            ..Default::default()
        };
        assert!(observe_match(None, Some(&no_name), "demo").is_err());
    }
}
