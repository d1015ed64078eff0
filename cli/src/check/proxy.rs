//! `mesh check --proxy [-n NS]`: the data plane. Meshed pods (a `mesh-proxy`
//! container, or the native sidecar's init container of that name) with their proxy
//! ready, their certificates from this install's trust anchors (the
//! `mesh.rs/trust-root-sha256` annotation the injector wrote against the anchors'
//! hash now: a pod injected before the anchors changed still trusts the old ones),
//! and their proxies of this CLI's version.

use super::{installed::config_map_key, kube::explain, Category, Check, Ctx};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use mesh_core::{
    inject::trust_root_sha256,
    install::{meta, names, VERSION},
};

pub(crate) async fn check(ctx: &Ctx, namespace: Option<&str>) -> Category {
    let mut c = Category::new("mesh-data-plane");
    let pods: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let where_ = namespace.map_or("any namespace".to_owned(), |ns| format!("namespace {ns}"));
    let list = match pods.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(e) => {
            c.push(Check::error(
                "dp-proxies-ready",
                "data plane proxies are ready",
                explain(&e, &format!("cannot list pods in {where_}")),
            ));
            return c;
        }
    };
    let meshed: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| proxy_ready(p).is_some())
        .collect();
    let name = |p: &Pod| {
        format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or_default(),
            p.metadata.name.as_deref().unwrap_or_default()
        )
    };
    if meshed.is_empty() {
        c.push(Check::error(
            "dp-proxies-ready",
            "data plane proxies are ready",
            format!(
                "no meshed pod in {where_}: annotate a workload or its namespace with \
                     {}={} and restart it",
                meta::INJECT,
                meta::INJECT_ENABLED
            ),
        ));
        return c;
    }
    let unready: Vec<String> = meshed
        .iter()
        .filter(|p| proxy_ready(p) == Some(false))
        .map(|p| {
            format!(
                "{}: its {} container is not ready",
                name(p),
                meta::PROXY_CONTAINER
            )
        })
        .collect();
    c.push(if unready.is_empty() {
        Check::ok("dp-proxies-ready", "data plane proxies are ready")
    } else {
        Check::error(
            "dp-proxies-ready",
            "data plane proxies are ready",
            format!(
                "{} of {} meshed pods' proxies are not ready (`kubectl logs POD -c {}`):",
                unready.len(),
                meshed.len(),
                meta::PROXY_CONTAINER
            ),
        )
        .details(unready)
        .retryable()
    });

    const ROOT: (&str, &str) = (
        "dp-trust-root",
        "data plane proxies' certificates come from the trust anchors",
    );
    match config_map_key(ctx, names::TRUST_ROOTS, names::TRUST_ROOTS_KEY).await {
        Err(why) => c.push(Check::error(ROOT.0, ROOT.1, why)),
        Ok(pem) => {
            let want = trust_root_sha256(&pem);
            let stale: Vec<String> = meshed
                .iter()
                .filter(|p| annotation(p, meta::TRUST_ROOT_SHA256) != Some(want.as_str()))
                .map(|p| match annotation(p, meta::TRUST_ROOT_SHA256) {
                    None => format!("{}: no {} annotation", name(p), meta::TRUST_ROOT_SHA256),
                    Some(_) => format!("{}: injected with other trust anchors", name(p)),
                })
                .collect();
            c.push(if stale.is_empty() {
                Check::ok(ROOT.0, ROOT.1)
            } else {
                Check::error(
                    ROOT.0,
                    ROOT.1,
                    format!(
                        "{} pod(s) trust other anchors than the install's and cannot talk mTLS \
                         with the rest: restart them (`kubectl rollout restart`) to be \
                         injected anew:",
                        stale.len()
                    ),
                )
                .details(stale)
            });
        }
    }

    const VERSIONS: (&str, &str) = ("dp-version", "data plane proxies match the cli version");
    let other: Vec<String> = meshed
        .iter()
        .filter(|p| annotation(p, meta::PROXY_VERSION) != Some(VERSION))
        .map(|p| {
            format!(
                "{}: {}",
                name(p),
                annotation(p, meta::PROXY_VERSION).unwrap_or("no version annotation")
            )
        })
        .collect();
    c.push(if other.is_empty() {
        Check::ok(VERSIONS.0, VERSIONS.1)
    } else {
        Check::warning(
            VERSIONS.0,
            VERSIONS.1,
            format!(
                "{} pod(s) run another proxy version than this CLI's {VERSION}: restart them after \
                 upgrading the control plane (`kubectl rollout restart`):",
                other.len()
            ),
        )
        .details(other)
    });
    c
}

fn annotation<'p>(pod: &'p Pod, key: &str) -> Option<&'p str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// `None` for a pod without a proxy; else whether its proxy container (regular or
/// native sidecar) is ready.
fn proxy_ready(pod: &Pod) -> Option<bool> {
    let spec = pod.spec.as_ref()?;
    let named = |c: &k8s_openapi::api::core::v1::Container| c.name == meta::PROXY_CONTAINER;
    let sidecar = spec.init_containers.iter().flatten().any(named);
    if !sidecar && !spec.containers.iter().any(named) {
        return None;
    }
    let status = pod.status.as_ref();
    let statuses = if sidecar {
        status.and_then(|s| s.init_container_statuses.as_ref())
    } else {
        status.and_then(|s| s.container_statuses.as_ref())
    };
    Some(
        statuses
            .into_iter()
            .flatten()
            .any(|s| s.name == meta::PROXY_CONTAINER && s.ready),
    )
}
