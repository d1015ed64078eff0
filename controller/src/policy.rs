//! The `mesh.policy.InboundPolicies` gRPC service (`Watch`: one pod port's inbound
//! policy, kept up to date), served on the destination port beside
//! `mesh.destination.Destination`, and the shared handle on the policy index
//! ([`PolicyIndex`]) that the backends feed.
//!
//! The index itself is `mesh_core::policy::index` (pure); here it sits behind one lock,
//! held only while an event is applied or a watch is opened. Each watched port has one
//! `tokio::sync::watch` channel in the index: a stream holds a receiver, so a slow
//! client never holds up the index, and skips straight to the newest policy.

use crate::metrics::{Metrics, StreamKind};
use futures_util::{stream, Stream};
use mesh_api::policy::{self as api, inbound_policies_server::InboundPolicies, PortSpec};
use mesh_core::policy::index::{self as policy_index, Index, Pod};
use mesh_core::policy::{Kind, Resource};
use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// What a backend must have listed before `Watch` answers: pods, and each policy kind
/// (an absent CRD counts as listed, empty). Until then every pod would be unknown and
/// every port would get the default policy, which a proxy reconnecting after a
/// controller restart must not be handed in place of the policy it enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Pods,
    Kind(Kind),
}

impl Part {
    fn bit(self) -> u8 {
        match self {
            Part::Pods => 1,
            Part::Kind(kind) => 2 << Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0),
        }
    }

    const ALL_BITS: u8 = (2 << Kind::ALL.len()) - 1;
}

/// The policy index, shared: the backends write it, the `Watch` streams read it.
/// Cheap to clone.
#[derive(Clone)]
pub struct PolicyIndex {
    inner: Arc<Mutex<Index>>,
    synced: Arc<watch::Sender<u8>>,
}

impl std::fmt::Debug for PolicyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyIndex").finish_non_exhaustive()
    }
}

impl PolicyIndex {
    pub fn new(config: policy_index::Config) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Index::new(config))),
            synced: Arc::new(watch::channel(0).0),
        }
    }

    /// The index, locked. A panic while it was held (a bug) does not stop the others.
    pub fn lock(&self) -> MutexGuard<'_, Index> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn apply(&self, namespace: &str, resource: Resource) {
        self.lock().apply(namespace, resource);
    }

    pub fn delete(&self, namespace: &str, kind: Kind, name: &str) {
        self.lock().delete(namespace, kind, name);
    }

    /// A re-list of `kinds`: all there is of them.
    pub fn reset(&self, kinds: &[Kind], resources: Vec<(String, Resource)>) {
        self.lock().reset(kinds, resources);
    }

    pub fn apply_pod(&self, pod: Pod) {
        self.lock().apply_pod(pod);
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.lock().delete_pod(namespace, name);
    }

    pub fn reset_pods(&self, pods: Vec<Pod>) {
        self.lock().reset_pods(pods);
    }

    /// `part` has been listed once.
    pub fn synced(&self, part: Part) {
        self.synced.send_modify(|bits| *bits |= part.bit());
    }

    /// Everything has been listed (the file backend, after its first load).
    pub fn synced_all(&self) {
        self.synced.send_modify(|bits| *bits = Part::ALL_BITS);
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow() == Part::ALL_BITS
    }

    async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|bits| *bits == Part::ALL_BITS).await;
    }
}

/// Who asks, as `PortSpec.workload` says (`{"ns":"<namespace>","pod":"<pod>"}`).
#[derive(Debug, serde::Deserialize)]
struct Workload {
    ns: String,
    pod: String,
}

/// The workload and port of a request, or `INVALID_ARGUMENT` saying what is wrong.
fn parse_spec(spec: &PortSpec) -> Result<(Workload, u16), Status> {
    const FORM: &str = r#"expected JSON {"ns":"<namespace>","pod":"<pod>"}"#;
    let workload: Workload = serde_json::from_str(&spec.workload).map_err(|e| {
        Status::invalid_argument(format!("invalid workload {:?}: {e}; {FORM}", spec.workload))
    })?;
    for (field, value) in [("ns", &workload.ns), ("pod", &workload.pod)] {
        if value.is_empty() {
            return Err(Status::invalid_argument(format!(
                "invalid workload {:?}: `{field}` is empty; {FORM}",
                spec.workload
            )));
        }
    }
    let port = u16::try_from(spec.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            Status::invalid_argument(format!("invalid port {}: expected 1-65535", spec.port))
        })?;
    Ok((workload, port))
}

/// The service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PolicyService {
    index: PolicyIndex,
    metrics: Arc<Metrics>,
    /// Ends every open stream (shutdown).
    shutdown: CancellationToken,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Keeps the stream gauge honest however a stream ends.
struct Opened(Arc<Metrics>);

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.stream_closed(StreamKind::Policy);
    }
}

impl PolicyService {
    pub fn new(index: PolicyIndex, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Self {
        Self {
            index,
            metrics,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl InboundPolicies for PolicyService {
    type WatchStream = BoxStream<api::InboundPolicy>;

    async fn watch(&self, req: Request<PortSpec>) -> Result<Response<Self::WatchStream>, Status> {
        let (workload, port) = parse_spec(req.get_ref())?;
        tokio::select! {
            () = self.index.wait_synced() => {}
            () = self.shutdown.cancelled() => {
                return Err(Status::unavailable("the controller is shutting down"));
            }
        }
        let rx = self
            .index
            .lock()
            .watch(&workload.ns, &workload.pod, port)
            .map_err(|e| Status::not_found(e.to_string()))?;
        tracing::debug!(ns = %workload.ns, pod = %workload.pod, port, "policy stream opened");
        self.metrics.stream_opened(StreamKind::Policy);
        let opened = Opened(Arc::clone(&self.metrics));
        Ok(Response::new(Box::pin(policies(
            rx,
            opened,
            self.shutdown.clone(),
        ))))
    }
}

/// The `Watch` response stream: the current policy, then one per change; it ends when
/// the pod is deleted or the controller shuts down.
fn policies(
    rx: watch::Receiver<policy_index::Policy>,
    opened: Opened,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<api::InboundPolicy, Status>> + Send {
    stream::unfold(
        (rx, true, opened, shutdown),
        |(mut rx, first, opened, shutdown)| async move {
            if !first {
                tokio::select! {
                    changed = rx.changed() => changed.ok()?,
                    () = shutdown.cancelled() => return None,
                }
            }
            let policy = api::InboundPolicy::clone(&rx.borrow_and_update());
            opened.0.update_sent();
            Some((Ok(policy), (rx, false, opened, shutdown)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    fn spec(workload: &str, port: u32) -> PortSpec {
        PortSpec {
            workload: workload.into(),
            port,
        }
    }

    #[test]
    fn bad_specs_are_invalid_arguments_naming_what_is_wrong() {
        let ok = r#"{"ns":"shop","pod":"web-1"}"#;
        let (w, port) = parse_spec(&spec(ok, 8080)).unwrap();
        assert_eq!(
            (w.ns.as_str(), w.pod.as_str(), port),
            ("shop", "web-1", 8080)
        );
        for (workload, port, says) in [
            ("web-1", 80, "invalid workload \"web-1\""),
            (r#"{"ns":"shop"}"#, 80, "missing field `pod`"),
            (r#"{"ns":"","pod":"p"}"#, 80, "`ns` is empty"),
            (ok, 0, "invalid port 0: expected 1-65535"),
            (ok, 65536, "invalid port 65536"),
        ] {
            let status = parse_spec(&spec(workload, port)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(says), "{}", status.message());
        }
    }

    fn pod(name: &str) -> Pod {
        Pod {
            namespace: "shop".into(),
            name: name.into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Pod::default()
        }
    }

    #[tokio::test]
    async fn a_watch_sends_the_policy_then_each_change_and_ends_with_its_pod() {
        let index = PolicyIndex::new(Default::default());
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let service = PolicyService::new(index.clone(), Arc::clone(&metrics), shutdown.clone());
        index.apply_pod(pod("web-1"));
        index.synced_all();

        let unknown = service
            .watch(Request::new(spec(r#"{"ns":"shop","pod":"nope"}"#, 80)))
            .await
            .err()
            .expect("unknown pod");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert!(unknown.message().contains("shop/nope"));

        let mut stream = service
            .watch(Request::new(spec(r#"{"ns":"shop","pod":"web-1"}"#, 8080)))
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.server.unwrap().kind, "default");
        assert_eq!(metrics.streams(StreamKind::Policy), 1);

        let server = mesh_core::policy::parse_yaml(
            "apiVersion: policy.mesh.rs/v1alpha1\nkind: Server\nmetadata: {name: web}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  port: 8080\n",
        )
        .unwrap();
        index.apply("shop", server);
        let second = stream.next().await.unwrap().unwrap();
        assert_eq!(second.server.unwrap().name, "web");

        index.delete_pod("shop", "web-1");
        assert!(
            stream.next().await.is_none(),
            "the pod is gone: the stream ends"
        );
        drop(stream);
        assert_eq!(metrics.streams(StreamKind::Policy), 0);
    }

    #[tokio::test]
    async fn a_watch_waits_for_the_first_lists_and_shutdown_ends_streams() {
        let index = PolicyIndex::new(Default::default());
        let shutdown = CancellationToken::new();
        let service = PolicyService::new(
            index.clone(),
            Arc::new(Metrics::default()),
            shutdown.clone(),
        );
        index.apply_pod(pod("web-1"));
        let ask = || service.watch(Request::new(spec(r#"{"ns":"shop","pod":"web-1"}"#, 80)));
        let mut pending = Box::pin(ask());
        assert!(
            futures_util::poll!(pending.as_mut()).is_pending(),
            "nothing listed yet: no answer"
        );
        index.synced(Part::Pods);
        for kind in Kind::ALL {
            assert!(futures_util::poll!(pending.as_mut()).is_pending());
            index.synced(Part::Kind(kind));
        }
        let mut stream = pending.await.unwrap().into_inner();
        assert!(stream.next().await.is_some());
        shutdown.cancel();
        assert!(stream.next().await.is_none(), "shutdown ends the stream");
    }
}
