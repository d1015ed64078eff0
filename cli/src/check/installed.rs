//! The checks of an install: its objects there and current (`mesh-config`), the
//! controller's pods ready (`mesh-control-plane`), the identity's trust anchors and
//! issuer (`mesh-identity`), the webhooks' certificate and configurations
//! (`mesh-webhooks`), and the controller's version (`mesh-version`).
//!
//! Every name comes from [`mesh_core::install`], the place `mesh install` takes them
//! from; the CRDs are compared with the ones this CLI was built with
//! (`manifests/crds/`).

use super::{
    certs,
    kube::{explain, is_not_found},
    Category, Check, Ctx,
};
use crate::api::{Api as ControllerApi, ApiArgs};
use k8s_openapi::api::{
    admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
    },
    core::v1::{ConfigMap, Namespace, Pod, Secret},
};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use mesh_core::install::{
    names, Values, COMPONENT_LABEL, CONTROLLER_COMPONENT, NAMESPACE, VERSION,
};
use std::time::SystemTime;

/// The CRDs this CLI installs (`mesh install --crds`), by file name: what the
/// cluster's must match.
const CRDS: &[(&str, &str)] = &[(
    "manifests/crds/serviceprofiles.yaml",
    include_str!("../../../manifests/crds/serviceprofiles.yaml"),
)];

/// What to run when the install's objects are missing.
const INSTALL: &str = "mesh install | kubectl apply -f -";

/// Every category of an installed mesh, in order.
pub(crate) async fn checks(ctx: &Ctx) -> Vec<Category> {
    let now = SystemTime::now();
    let (config, values) = config(ctx).await;
    // Without the namespace there is no install to check further: every later check
    // would fail for the one reason already given.
    if config.checks.first().is_some_and(|c| c.error.is_some()) {
        return vec![config];
    }
    let (pods, identity, webhooks, version) = tokio::join!(
        control_plane(ctx),
        identity(ctx, &values, now),
        webhooks(ctx, now),
        version(ctx),
    );
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
    c.push(profiles(ctx).await);
    (c, values)
}

/// Each CRD of [`CRDS`] present, every version of it served with this CLI's schema.
async fn crds(ctx: &Ctx) -> Check {
    const ID: &str = "config-crds";
    const WHAT: &str = "control plane CustomResourceDefinitions are installed and current";
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource);
    let mut problems = Vec::new();
    for (file, text) in CRDS {
        let want: serde_json::Value = match mesh_core::yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{file} (built into this CLI) does not parse: {e}"));
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

/// Every ServiceProfile valid, each problem named with its object, field and reason.
async fn profiles(ctx: &Ctx) -> Check {
    use mesh_core::profile::{GROUP, KIND, PLURAL, VERSION as V};
    const ID: &str = "config-profiles";
    const WHAT: &str = "ServiceProfiles are valid";
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, V, KIND), PLURAL);
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource);
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(e) if is_not_found(&e) => {
            return Check::error(
                ID,
                WHAT,
                format!(
                    "{PLURAL}.{GROUP} is not served (the API server answered 404): the CRD is \
                     missing; run `mesh install --crds | kubectl apply -f -`"
                ),
            )
        }
        Err(e) => {
            return Check::error(
                ID,
                WHAT,
                explain(&e, &format!("cannot list {PLURAL}.{GROUP}")),
            )
        }
    };
    let mut details = Vec::new();
    for obj in &list.items {
        let ns = obj.metadata.namespace.as_deref().unwrap_or("default");
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        let spec = obj.data.get("spec").cloned().unwrap_or_default();
        if let Err(p) = mesh_core::profile::validate_object(name, ns, spec, &ctx.cluster_domain) {
            details.extend(p.0.iter().map(|p| format!("{ns}/{name}: {p}")));
        }
    }
    if details.is_empty() {
        Check::ok(ID, WHAT)
    } else {
        Check::error(
            ID,
            WHAT,
            format!(
                "{} problem(s); the controller keeps each profile's last valid version in force \
                 until it is fixed (`mesh profile validate FILE` checks a file before it is \
                 applied):",
                details.len()
            ),
        )
        .details(details)
    }
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
    const ID: &str = "cp-profiles-crd";
    const WHAT: &str = "the controller sees the ServiceProfile CRD";
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
                ID,
                WHAT,
                format!("cannot read the controller's metrics: {e:#}"),
            )
        }
    };
    let value = metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(GAUGE)?;
        rest.strip_prefix(' ').map(str::trim)
    });
    match value {
        Some("1") => Check::ok(ID, WHAT),
        Some(_) => Check::warning(
            ID,
            WHAT,
            "the controller found serviceprofiles.mesh.rs not served when it last listed              profiles: it serves every service as if it had no ServiceProfile (no routes,              retries or timeouts); install the CRDs (`mesh install --crds | kubectl apply -f              -`), which it picks up within seconds, without a restart"
                .into(),
        ),
        None => Check::warning(
            ID,
            WHAT,
            format!(
                "the controller does not report {GAUGE}: it has not listed profiles yet, or it                  is older than this CLI"
            ),
        ),
    }
}

// === mesh-identity ===

async fn identity(ctx: &Ctx, values: &Values, now: SystemTime) -> Category {
    let mut c = Category::new("mesh-identity");
    let (anchors, issuer, key) = tokio::join!(
        config_map_key(ctx, names::TRUST_ROOTS, names::TRUST_ROOTS_KEY),
        secret_key(ctx, names::ISSUER, "tls.crt"),
        secret_key(ctx, names::ISSUER, "tls.key"),
    );
    let anchors = anchors.and_then(|pem| {
        Ok((
            certs::pem_certificates(&pem)
                .map_err(|e| format!("the trust anchors ({}): {e}", names::TRUST_ROOTS))?,
            pem,
        ))
    });
    let issuer = issuer.and_then(|pem| {
        let mut certs = certs::pem_certificates(&pem)
            .map_err(|e| format!("the issuer certificate ({}): {e}", names::ISSUER))?;
        Ok((certs.remove(0), pem))
    });
    push_validity(
        &mut c,
        (
            "identity-anchors",
            "trust anchors are within their validity period",
        ),
        (
            "identity-anchors-60d",
            "trust anchors are valid for at least 60 days",
        ),
        anchors
            .as_ref()
            .map(|(ders, _)| ders.clone())
            .map_err(Clone::clone),
        now,
        "replace the trust anchors and the issuer together, then restart every meshed pod",
    );
    push_validity(
        &mut c,
        (
            "identity-issuer",
            "issuer certificate is within its validity period",
        ),
        (
            "identity-issuer-60d",
            "issuer certificate is valid for at least 60 days",
        ),
        issuer
            .as_ref()
            .map(|(der, _)| vec![der.clone()])
            .map_err(Clone::clone),
        now,
        "issue a new one from the trust anchors and replace the Secret's tls.crt and tls.key",
    );
    const SIGNED: (&str, &str) = (
        "identity-issuer-signed",
        "issuer certificate is issued by the trust anchors",
    );
    let signed = match (&anchors, &issuer, &key) {
        (Ok((_, anchors_pem)), Ok((der, issuer_pem)), Ok(key)) => {
            // Validity has checks of its own: judge the rest at a time the issuer is
            // valid, so an expired issuer is not reported twice.
            certs::within(der).and_then(|at| {
                mesh_core::ca::Ca::new(
                    &values.trust_domain,
                    mesh_core::ca::DEFAULT_LIFETIME,
                    issuer_pem,
                    key,
                    anchors_pem,
                    at,
                )
                .map(|_| ())
                .map_err(|e| {
                    format!(
                        "the controller cannot sign with the issuer in {NAMESPACE}/{}: {e}; \
                         issue it from the trust anchors in {NAMESPACE}/{} (or re-install)",
                        names::ISSUER,
                        names::TRUST_ROOTS
                    )
                })
            })
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e.clone()),
    };
    c.push(Check::from(SIGNED.0, SIGNED.1, signed));
    c
}

/// Two checks of certificates: all valid now, and none expiring within 60 days (a
/// warning).
fn push_validity(
    c: &mut Category,
    (valid_id, valid_what): (&'static str, &'static str),
    (soon_id, soon_what): (&'static str, &'static str),
    ders: Result<Vec<Vec<u8>>, String>,
    now: SystemTime,
    renew: &str,
) {
    let ders = match ders {
        Ok(d) => d,
        Err(why) => {
            c.push(Check::error(valid_id, valid_what, why));
            return;
        }
    };
    let mut invalid = Vec::new();
    let mut soonest = None;
    for der in &ders {
        match certs::remaining(der, now) {
            Ok(left) => {
                if soonest.is_none_or(|(l, _)| left < l) {
                    soonest = Some((left, der));
                }
            }
            Err(why) => invalid.push(format!("{}: {why}", certs::subject(der))),
        }
    }
    if !invalid.is_empty() {
        c.push(
            Check::error(valid_id, valid_what, format!("not valid now; {renew}:")).details(invalid),
        );
        return;
    }
    c.push(Check::ok(valid_id, valid_what));
    match soonest {
        Some((left, der)) if left < certs::RENEW_WITHIN => c.push(Check::warning(
            soon_id,
            soon_what,
            format!(
                "{} expires in {} (at {}); {renew}",
                certs::subject(der),
                certs::days(left),
                certs::not_after(der)
            ),
        )),
        _ => c.push(Check::ok(soon_id, soon_what)),
    }
}

// === mesh-webhooks ===

async fn webhooks(ctx: &Ctx, now: SystemTime) -> Category {
    let mut c = Category::new("mesh-webhooks");
    let (cert, ca) = tokio::join!(
        secret_key(ctx, names::WEBHOOK_TLS, "tls.crt"),
        secret_key(ctx, names::WEBHOOK_TLS, "ca.crt"),
    );
    let cert = cert.and_then(|pem| {
        certs::pem_certificates(&pem)
            .map(|mut c| c.remove(0))
            .map_err(|e| format!("the webhook certificate ({}): {e}", names::WEBHOOK_TLS))
    });
    let service_name = format!("{}.{NAMESPACE}.svc", names::WEBHOOK_SERVICE);
    let renew =
        "re-run `mesh install | kubectl apply -f -` for a new one, then restart the controller";
    push_validity(
        &mut c,
        (
            "webhook-cert",
            "webhook serving certificate is within its validity period",
        ),
        (
            "webhook-cert-60d",
            "webhook serving certificate is valid for at least 60 days",
        ),
        cert.clone().map(|d| vec![d]),
        now,
        renew,
    );
    const NAMED: (&str, &str) = (
        "webhook-cert-names",
        "webhook serving certificate is for the webhook service and signed by its CA",
    );
    let named = match (&cert, &ca) {
        (Ok(der), Ok(ca)) => serving_cert_ok(der, ca, &service_name),
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
    };
    c.push(Check::from(NAMED.0, NAMED.1, named));

    let mutating: Api<MutatingWebhookConfiguration> = Api::all(ctx.client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(ctx.client.clone());
    let (injector, validator) = tokio::join!(
        mutating.get_opt(names::INJECTOR_WEBHOOK),
        validating.get_opt(names::SP_VALIDATOR_WEBHOOK),
    );
    let injector = injector.map(|o| {
        o.map(|w| {
            w.webhooks
                .unwrap_or_default()
                .into_iter()
                .map(|h| (h.name, h.client_config))
                .collect::<Vec<_>>()
        })
    });
    let validator = validator.map(|o| {
        o.map(|w| {
            w.webhooks
                .unwrap_or_default()
                .into_iter()
                .map(|h| (h.name, h.client_config))
                .collect::<Vec<_>>()
        })
    });
    for (id, what, kind, name, path, hooks) in [
        (
            "webhook-injector",
            "proxy injector webhook is configured for the webhook service",
            "MutatingWebhookConfiguration",
            names::INJECTOR_WEBHOOK,
            names::INJECT_PATH,
            injector,
        ),
        (
            "webhook-sp-validator",
            "ServiceProfile validator webhook is configured for the webhook service",
            "ValidatingWebhookConfiguration",
            names::SP_VALIDATOR_WEBHOOK,
            names::VALIDATE_SP_PATH,
            validator,
        ),
    ] {
        let result = match hooks {
            Err(e) => Err(explain(&e, &format!("cannot read the {kind} {name}"))),
            Ok(None) => Err(format!("the {kind} {name} does not exist: run `{INSTALL}`")),
            Ok(Some(hooks)) if hooks.is_empty() => Err(format!(
                "the {kind} {name} has no webhooks: re-run `{INSTALL}`"
            )),
            Ok(Some(hooks)) => {
                let problems: Vec<String> = hooks
                    .iter()
                    .filter_map(|(hook, config)| {
                        client_config_problem(config, path, cert.as_ref().ok())
                            .map(|p| format!("webhook {hook}: {p}"))
                    })
                    .collect();
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "the {kind} {name} does not lead to the controller: {}; re-run `{INSTALL}`",
                        problems.join("; ")
                    ))
                }
            }
        };
        c.push(Check::from(id, what, result));
    }
    c
}

/// Whether the serving certificate names the webhook service and its CA signed it.
fn serving_cert_ok(der: &[u8], ca_pem: &str, service: &str) -> Result<(), String> {
    let names = certs::dns_names(der)?;
    if !names.iter().any(|n| n == service) {
        return Err(format!(
            "the certificate in {NAMESPACE}/{} is for {} and not {service}: the API server \
             will refuse it; re-run `{INSTALL}`",
            names::WEBHOOK_TLS,
            if names.is_empty() {
                "no DNS name".into()
            } else {
                names.join(", ")
            }
        ));
    }
    let ca = certs::pem_certificates(ca_pem)
        .map_err(|e| format!("ca.crt of {NAMESPACE}/{}: {e}", names::WEBHOOK_TLS))?;
    if !certs::signed_by(der, &ca)? {
        return Err(format!(
            "tls.crt of {NAMESPACE}/{} is not signed by its ca.crt; re-run `{INSTALL}`",
            names::WEBHOOK_TLS
        ));
    }
    Ok(())
}

/// What is wrong with where a webhook configuration sends the API server, if
/// anything: the service, port and path, and a `caBundle` that verifies the serving
/// certificate.
fn client_config_problem(
    config: &WebhookClientConfig,
    path: &str,
    cert: Option<&Vec<u8>>,
) -> Option<String> {
    let Some(service) = &config.service else {
        return Some(format!(
            "it calls {} rather than the Service {NAMESPACE}/{}",
            config.url.as_deref().unwrap_or("nothing"),
            names::WEBHOOK_SERVICE
        ));
    };
    if service.name != names::WEBHOOK_SERVICE || service.namespace != NAMESPACE {
        return Some(format!(
            "it calls the Service {}/{} rather than {NAMESPACE}/{}",
            service.namespace,
            service.name,
            names::WEBHOOK_SERVICE
        ));
    }
    if service.path.as_deref() != Some(path) {
        return Some(format!(
            "it calls path {} rather than {path}",
            service.path.as_deref().unwrap_or("/")
        ));
    }
    if service.port.is_some_and(|p| p != 443) {
        return Some(format!("it calls port {:?} rather than 443", service.port));
    }
    let Some(bundle) = &config.ca_bundle else {
        return Some("it has no caBundle, so the API server cannot verify the webhook".into());
    };
    let bundle = String::from_utf8_lossy(&bundle.0);
    let cas = match certs::pem_certificates(&bundle) {
        Ok(cas) => cas,
        Err(e) => return Some(format!("its caBundle: {e}")),
    };
    match cert.map(|c| certs::signed_by(c, &cas)) {
        Some(Ok(true)) | None => None,
        Some(Ok(false)) => Some(format!(
            "its caBundle does not verify the serving certificate in {NAMESPACE}/{}, so the \
             API server will refuse the webhook",
            names::WEBHOOK_TLS
        )),
        Some(Err(e)) => Some(e),
    }
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
            c.push(
                Check::error("cp-version", "can retrieve the control plane version", why)
                    .retryable(),
            );
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
async fn secret_key(ctx: &Ctx, name: &str, key: &str) -> Result<String, String> {
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
