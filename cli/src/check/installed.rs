//! The checks of an install: its objects there and current (`mesh-config`), the
//! controller's pods ready and its view of the CRD (`mesh-control-plane`), and the
//! controller's version (`mesh-version`); the certificates' categories are
//! [`super::tls`]'s.
//!
//! Every name comes from [`mesh_core::install`], the place `mesh install` takes them
//! from; the CRDs are compared with the ones this CLI installs
//! ([`crate::install::CRDS`], `manifests/crds/`).

use super::{
    kube::{explain, is_not_found},
    tls, Category, Check, Ctx,
};
use crate::api::{Api as ControllerApi, ApiArgs};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use mesh_core::install::{
    names, Values, COMPONENT_LABEL, CONTROLLER_COMPONENT, NAMESPACE, VERSION,
};
use std::time::SystemTime;

/// What to run when the install's objects are missing.
pub(crate) const INSTALL: &str = "mesh install | kubectl apply -f -";

/// Every category of an installed mesh, in order.
pub(crate) async fn checks(ctx: &Ctx) -> Vec<Category> {
    let now = SystemTime::now();
    let (config, values) = config(ctx).await;
    // Without the namespace there is no install to check further: every later check
    // would fail for the one reason already given.
    if config.checks.first().is_some_and(|c| c.error.is_some()) {
        return vec![config];
    }
    // The version is asked after the pods are read, not beside: a pod turning ready
    // between the two reads must be seen ready by the later one, or a run could find
    // the pods ready and the controller not, and end a `--wait` on a failure that
    // waiting would have mended.
    let (pods, identity, webhooks) = tokio::join!(
        control_plane(ctx),
        tls::identity(ctx, &values, now),
        tls::webhooks(ctx, now),
    );
    let mut version = version(ctx).await;
    // The controller not answering mends itself only while its pods are coming up;
    // with them ready, it is something waiting will not change (a refused
    // port-forward, a controller that does not serve its API).
    if pods.checks.iter().any(Check::wants_retry) {
        version.checks = version.checks.into_iter().map(Check::retryable).collect();
    }
    vec![config, pods, identity, webhooks, version]
}

// === mesh-config ===

/// `mesh-config`, and the install's values (defaults if they cannot be read, which
/// its own check reports).
async fn config(ctx: &Ctx) -> (Category, Values) {
    let mut c = Category::new("mesh-config");
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    c.push(Check::from(
        "config-ns",
        "control plane namespace exists",
        match namespaces.get_opt(NAMESPACE).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!(
                "the namespace {NAMESPACE} does not exist: mesh is not installed; run `{INSTALL}`"
            )),
            Err(e) => Err(explain(
                &e,
                &format!("cannot read the namespace {NAMESPACE}"),
            )),
        },
    ));
    c.push(crds(ctx).await);
    let values = config_map_key(ctx, names::CONFIG, names::CONFIG_KEY)
        .await
        .and_then(|yaml| {
            Values::from_yaml(&yaml).map_err(|e| {
                format!(
                    "the ConfigMap {NAMESPACE}/{} key {} is not valid install values: {e}; \
                     re-run `{INSTALL}`",
                    names::CONFIG,
                    names::CONFIG_KEY
                )
            })
        });
    let (check, values) = match values {
        Ok(values) => (
            Check::ok("config-values", "the install's values are readable"),
            values,
        ),
        Err(why) => (
            Check::error("config-values", "the install's values are readable", why),
            Values::default(),
        ),
    };
    c.push(check);
    c.push(profiles(ctx, &values).await);
    c.push(policies(ctx).await);
    (c, values)
}

/// Each CRD `mesh install --crds` applies ([`crate::install::CRDS`]) present, every
/// version of it served with this CLI's schema.
async fn crds(ctx: &Ctx) -> Check {
    const ID: &str = "config-crds";
    const WHAT: &str = "control plane CustomResourceDefinitions are installed and current";
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource);
    let mut problems = Vec::new();
    for (crd, text) in crate::install::CRDS {
        let want: serde_json::Value = match mesh_core::yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!(
                    "the CRD {crd} built into this CLI does not parse: {e}"
                ));
                continue;
            }
        };
        let name = want["metadata"]["name"].as_str().unwrap_or_default();
        let have = match api.get_opt(name).await {
            Ok(Some(have)) => have.data,
            Ok(None) => {
                problems.push(format!("{name} is not installed"));
                continue;
            }
            Err(e) => {
                problems.push(explain(&e, &format!("cannot read the CRD {name}")));
                continue;
            }
        };
        for version in want["spec"]["versions"].as_array().into_iter().flatten() {
            let v = version["name"].as_str().unwrap_or_default();
            let theirs = have["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|h| h["name"] == version["name"]);
            match theirs {
                None => problems.push(format!("{name} lacks version {v}")),
                Some(h) if h["served"] != serde_json::Value::Bool(true) => {
                    problems.push(format!("{name} does not serve version {v}"));
                }
                Some(h) if !same_schema(&h["schema"], &version["schema"]) => {
                    problems.push(format!(
                        "{name} version {v} has another schema than this CLI's (an older or newer \
                     mesh's)"
                    ))
                }
                Some(_) => {}
            }
        }
    }
    if problems.is_empty() {
        Check::ok(ID, WHAT)
    } else {
        Check::error(
            ID,
            WHAT,
            "the cluster's CRDs are not this version's: run `mesh install --crds | kubectl \
             apply -f -`"
                .into(),
        )
        .details(problems)
    }
}

/// Whether two CRD version schemas say the same, read as the API server reads them
/// (k8s-openapi's `CustomResourceValidation`): how a client wrote the CRD (`mesh
/// install` renders it through those types) must not count as a difference.
fn same_schema(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceValidation;
    let read =
        |v: &serde_json::Value| serde_json::from_value::<CustomResourceValidation>(v.clone()).ok();
    match (read(a), read(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// Every object of a custom resource, listed across namespaces; a resource that is not
/// served (its CRD missing) or cannot be listed is the check's error.
async fn list_all(
    ctx: &Ctx,
    (group, version, kind, plural): (&str, &str, &str, &str),
) -> Result<Vec<DynamicObject>, String> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource);
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list
            .items
            .into_iter()
            .map(|mut o| {
                // List items may come without their type; validation reads it.
                o.types = Some(kube::api::TypeMeta {
                    api_version: format!("{group}/{version}"),
                    kind: kind.to_string(),
                });
                o
            })
            .collect()),
        Err(e) if is_not_found(&e) => Err(format!(
            "{plural}.{group} is not served (the API server answered 404): the CRD is \
             missing; run `mesh install --crds | kubectl apply -f -`"
        )),
        Err(e) => Err(explain(&e, &format!("cannot list {plural}.{group}"))),
    }
}

/// `ns/name` of an object, as the checks' details name it.
fn object_name(obj: &DynamicObject) -> String {
    format!(
        "{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or("default"),
        obj.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Every ServiceProfile valid, each problem named with its object, field and reason.
async fn profiles(ctx: &Ctx, values: &Values) -> Check {
    use mesh_core::profile::{GROUP, KIND, PLURAL, VERSION as V};
    const ID: &str = "config-profiles";
    const WHAT: &str = "ServiceProfiles are valid";
    let list = match list_all(ctx, (GROUP, V, KIND, PLURAL)).await {
        Ok(list) => list,
        Err(e) => return Check::error(ID, WHAT, e),
    };
    let domain = ctx
        .cluster_domain
        .as_deref()
        .unwrap_or(&values.cluster_domain);
    let mut details = Vec::new();
    for obj in &list {
        let ns = obj.metadata.namespace.as_deref().unwrap_or("default");
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        let spec = obj.data.get("spec").cloned().unwrap_or_default();
        if let Err(p) = mesh_core::profile::validate_object(name, ns, spec, domain) {
            details.extend(p.0.iter().map(|p| format!("{ns}/{name}: {p}")));
        }
    }
    invalid_objects(
        ID,
        WHAT,
        details,
        "the controller keeps each profile's last valid version in force until it is fixed \
         (`mesh profile validate FILE` checks a file before it is applied)",
    )
}

/// A validity check's outcome: passed without problems, else an error counting them,
/// saying what the controller does meanwhile (`meanwhile`), one detail line each.
fn invalid_objects(
    id: &'static str,
    what: &'static str,
    details: Vec<String>,
    meanwhile: &str,
) -> Check {
    if details.is_empty() {
        Check::ok(id, what)
    } else {
        Check::error(
            id,
            what,
            format!("{} problem(s); {meanwhile}:", details.len()),
        )
        .details(details)
    }
}

/// Every authorization policy object (`policy.mesh.rs`: servers, authorization
/// policies, authentications, routes) valid, each problem named with its kind, object,
/// field and reason: the rules `mesh policy validate` and the admission webhook apply,
/// for objects that got in without the webhook (applied before it, or with it off).
async fn policies(ctx: &Ctx) -> Check {
    use mesh_core::policy::{Kind, GROUP, VERSION as V};
    const ID: &str = "config-policies";
    const WHAT: &str = "authorization policies are valid";
    let mut details = Vec::new();
    for kind in Kind::ALL {
        let list = match list_all(ctx, (GROUP, V, kind.name(), kind.plural())).await {
            Ok(list) => list,
            Err(e) => return Check::error(ID, WHAT, e),
        };
        for obj in &list {
            let value = match serde_json::to_value(obj) {
                Ok(v) => v,
                Err(e) => {
                    details.push(format!("{} {}: {e}", kind.name(), object_name(obj)));
                    continue;
                }
            };
            if let Err(p) = mesh_core::policy::validate_value(value) {
                details.extend(
                    p.0.iter()
                        .map(|p| format!("{} {}: {p}", kind.name(), object_name(obj))),
                );
            }
        }
    }
    invalid_objects(
        ID,
        WHAT,
        details,
        "the controller leaves an invalid object out of every policy, as if it were not \
         there (`mesh authz TYPE/NAME` shows what is in force, `mesh policy validate FILE` \
         checks a file before it is applied)",
    )
}

// === mesh-control-plane ===

async fn control_plane(ctx: &Ctx) -> Category {
    const ID: &str = "cp-pods-ready";
    const WHAT: &str = "control plane pods are ready";
    let mut c = Category::new("mesh-control-plane");
    let selector = format!("{COMPONENT_LABEL}={CONTROLLER_COMPONENT}");
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    let check = match pods.list(&ListParams::default().labels(&selector)).await {
        Err(e) => Check::error(
            ID,
            WHAT,
            explain(&e, &format!("cannot list pods in {NAMESPACE}")),
        ),
        Ok(list) if list.items.is_empty() => Check::error(
            ID,
            WHAT,
            format!(
                "no pod labelled {selector} in {NAMESPACE}: is the {} Deployment there? \
                 (`kubectl -n {NAMESPACE} describe deploy/{}`)",
                names::CONTROLLER,
                names::CONTROLLER
            ),
        ),
        Ok(list) => {
            let unready: Vec<String> = list
                .items
                .iter()
                .filter_map(|p| {
                    let why = crate::api::unready(p)?;
                    Some(format!(
                        "{}: {why}",
                        p.metadata.name.as_deref().unwrap_or_default()
                    ))
                })
                .collect();
            if unready.is_empty() {
                Check::ok(ID, WHAT)
            } else {
                Check::error(
                    ID,
                    WHAT,
                    format!(
                        "{} of {} controller pods are not ready (`kubectl -n {NAMESPACE} \
                         describe pod NAME`, `kubectl -n {NAMESPACE} logs NAME`):",
                        unready.len(),
                        list.items.len()
                    ),
                )
                .details(unready)
            }
        }
    };
    c.push(check.retryable());
    c.push(profiles_crd_seen(ctx).await);
    c
}

/// The controller's own view of the ServiceProfile CRD: its gauge
/// `serviceprofile_crd_installed` (the Kubernetes backend's, on the admin port's
/// `/metrics`), 0 when its last list of profiles answered 404. It runs without
/// profiles then, rather than not at all; this says so.
async fn profiles_crd_seen(ctx: &Ctx) -> Check {
    let (id, what) = mesh_core::health::PROFILES_CRD;
    const GAUGE: &str = "serviceprofile_crd_installed";
    let metrics = crate::api::get_from_controller_pod(
        &ctx.kube,
        mesh_api::control_plane::ADMIN_PORT,
        "/metrics",
    )
    .await;
    let metrics = match metrics {
        Ok(m) => m,
        Err(e) => {
            return Check::warning(
                id,
                what,
                format!("cannot read the controller's metrics: {e:#}"),
            )
        }
    };
    let value = metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(GAUGE)?;
        rest.strip_prefix(' ').map(str::trim)
    });
    mesh_core::health::profiles_crd(value.map(|v| v == "1"))
}

// === mesh-version ===

async fn version(ctx: &Ctx) -> Category {
    let mut c = Category::new("mesh-version");
    let args = ApiArgs {
        kube: ctx.kube.clone(),
        ..ApiArgs::default()
    };
    let answer = match ControllerApi::cluster(&args).await {
        Ok(api) => api.get_json("/api/version", &[]).await,
        Err(e) => Err(e),
    };
    let server = answer
        .map_err(|e| format!("cannot ask the controller its version: {e:#}"))
        .and_then(|doc| {
            doc["version"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| "the controller's /api/version names no version".to_owned())
        });
    match server {
        Err(why) => {
            c.push(Check::error(
                "cp-version",
                "can retrieve the control plane version",
                why,
            ));
        }
        Ok(server) => {
            c.push(Check::ok(
                "cp-version",
                "can retrieve the control plane version",
            ));
            const ID: &str = "cp-version-match";
            const WHAT: &str = "control plane and cli versions match";
            c.push(if server == VERSION {
                Check::ok(ID, WHAT)
            } else {
                Check::warning(
                    ID,
                    WHAT,
                    format!(
                        "the control plane is {server} and this CLI {VERSION}: upgrade one to \
                         the other (`mesh install | kubectl apply -f -` with this CLI upgrades \
                         the control plane)"
                    ),
                )
            });
        }
    }
    c
}

// === Reading objects ===

/// A ConfigMap's key in the control plane's namespace, or what is missing.
pub(crate) async fn config_map_key(ctx: &Ctx, name: &str, key: &str) -> Result<String, String> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    match api.get_opt(name).await {
        Err(e) => Err(explain(
            &e,
            &format!("cannot read the ConfigMap {NAMESPACE}/{name}"),
        )),
        Ok(None) => Err(format!(
            "the ConfigMap {NAMESPACE}/{name} does not exist: run `{INSTALL}`"
        )),
        Ok(Some(cm)) => cm.data.and_then(|mut d| d.remove(key)).ok_or_else(|| {
            format!("the ConfigMap {NAMESPACE}/{name} has no key {key}: re-run `{INSTALL}`")
        }),
    }
}

/// A Secret's key (as text) in the control plane's namespace, or what is missing.
pub(crate) async fn secret_key(ctx: &Ctx, name: &str, key: &str) -> Result<String, String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    match api.get_opt(name).await {
        Err(e) => Err(explain(
            &e,
            &format!("cannot read the Secret {NAMESPACE}/{name}"),
        )),
        Ok(None) => Err(format!(
            "the Secret {NAMESPACE}/{name} does not exist: run `{INSTALL}`"
        )),
        Ok(Some(secret)) => {
            let bytes = secret.data.and_then(|mut d| d.remove(key)).ok_or_else(|| {
                format!("the Secret {NAMESPACE}/{name} has no key {key}: re-run `{INSTALL}`")
            })?;
            String::from_utf8(bytes.0)
                .map_err(|_| format!("the Secret {NAMESPACE}/{name} key {key} is not PEM text"))
        }
    }
}
