//! The controller's APIs in a cluster, reached as `kubectl port-forward` reaches a pod:
//! the controller's pod found by its label in the control plane's namespace, and a
//! local listener per port whose every connection becomes a port-forward stream to
//! that pod (kube's `Api::<Pod>::portforward`, a WebSocket through the API server and
//! the kubelet). The HTTP and gRPC clients then talk to a local address, unchanged.
//!
//! Lifecycle: a [`Forward`] owns its listener's task, which owns every connection's
//! task; dropping the `Forward` (with the [`super::Api`] holding it) aborts them all,
//! so nothing outlives the command. A stream the kubelet refuses (nothing listens on
//! the pod's port, the pod went away) closes its local connection, and its error is
//! kept for the caller's message ([`Forward::error`]), since the HTTP client sees
//! only a closed connection.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use mesh_api::control_plane::{COMPONENT_LABEL, CONTROLLER_COMPONENT, NAMESPACE};
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

/// A local address leading to one port of the controller's pod, while it lives.
#[derive(Debug)]
pub(crate) struct Forward {
    pub(crate) local: SocketAddr,
    /// `mesh-system/controller-0:8084`, for messages.
    pub(crate) target: String,
    /// The last stream's failure, if one failed.
    error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

/// The first running and ready controller pod in the control plane's namespace, by
/// name; an error says what was found instead, where, and what to do.
pub(crate) async fn controller_pod(client: &kube::Client, cluster: &str) -> anyhow::Result<String> {
    let selector = format!("{COMPONENT_LABEL}={CONTROLLER_COMPONENT}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) => anyhow::anyhow!(
                "cannot list pods in namespace {NAMESPACE} ({cluster}): {} ({})",
                status.message,
                status.code
            ),
            e => anyhow::anyhow!("cannot reach the Kubernetes API of {cluster}: {e}"),
        })?;
    let mut found: Vec<(String, Option<String>)> = list
        .items
        .iter()
        .map(|pod| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            (name, unready(pod))
        })
        .collect();
    found.sort();
    if found.is_empty() {
        anyhow::bail!(
            "no controller pod in namespace {NAMESPACE} (pods labelled {selector}, {cluster}): \
             is mesh installed? run `mesh check`"
        );
    }
    if let Some((name, _)) = found.iter().find(|(_, why)| why.is_none()) {
        return Ok(name.clone());
    }
    let pods: Vec<String> = found
        .iter()
        .map(|(name, why)| format!("{name} ({})", why.as_deref().unwrap_or("ready")))
        .collect();
    anyhow::bail!(
        "no controller pod in namespace {NAMESPACE} is running and ready ({cluster}): {}",
        pods.join(", ")
    )
}

/// Why a pod cannot serve: not `Running`, or not `Ready`; `None` when it can.
pub(crate) fn unready(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    if phase != "Running" {
        return Some(phase.to_string());
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    (!ready).then(|| "Running, not ready".to_string())
}

// === impl Forward ===

impl Forward {
    /// Listens on `127.0.0.1:0` and forwards each connection to `port` of `pod` in the
    /// control plane's namespace.
    pub(crate) async fn open(client: kube::Client, pod: &str, port: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1 for a port-forward: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| anyhow::anyhow!("the port-forward's listener has no address: {e}"))?;
        let target = format!("{NAMESPACE}/{pod}:{port}");
        let error = Arc::new(Mutex::new(None));
        let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
        let task = tokio::spawn(accept(listener, pods, pod.to_string(), port, error.clone()));
        Ok(Self {
            local,
            target,
            error,
            task,
        })
    }

    /// Why the last stream failed, if one did: the kubelet's or the API server's words.
    pub(crate) fn error(&self) -> Option<String> {
        self.error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        // The listener's task owns every connection's task (a `JoinSet`): all end here.
        self.task.abort();
    }
}

/// Accepts local connections, each forwarded on a task of its own.
async fn accept(
    listener: TcpListener,
    pods: Api<Pod>,
    pod: String,
    port: u16,
    error: Arc<Mutex<Option<String>>>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    conns.spawn(stream(conn, pods.clone(), pod.clone(), port, error.clone()));
                }
                Err(error) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    tracing::debug!(%error, "port-forward accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One local connection: a port-forward stream opened for it, bytes copied both ways
/// until either side ends, and the kubelet's error, if it sends one, kept.
async fn stream(
    mut conn: TcpStream,
    pods: Api<Pod>,
    pod: String,
    port: u16,
    error: Arc<Mutex<Option<String>>>,
) {
    let keep = |message: String| {
        tracing::debug!(%pod, port, %message, "port-forward failed");
        *error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message);
    };
    let mut forwarder = match pods.portforward(&pod, &[port]).await {
        Ok(f) => f,
        Err(e) => return keep(format!("the API server refused the port-forward: {e}")),
    };
    let (Some(mut upstream), Some(refused)) =
        (forwarder.take_stream(port), forwarder.take_error(port))
    else {
        return keep("the port-forward has no stream for its port".into());
    };
    tokio::select! {
        // Polled first: the kubelet's error arrives before the stream it ends closes,
        // so it is kept before the local connection sees the close.
        biased;
        Some(message) = refused => keep(format!("the kubelet refused: {message}")),
        _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream) => {}
    }
    let _ = conn.shutdown().await;
    drop(upstream);
    forwarder.abort();
}
