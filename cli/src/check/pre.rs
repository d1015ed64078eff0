//! The checks before an install: the Kubernetes version (also run after one), and
//! `pre-kubernetes-setup`: the control plane's namespace is free, the user may create
//! every kind `mesh install` emits ([`INSTALLED_RESOURCES`], one
//! SelfSubjectAccessReview each, all at once), the clocks agree, and the admission
//! API the injector and validator need is served.

use super::{kube::explain, kube::Server, Category, Check, Ctx};
use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::Namespace,
};
use kube::api::{Api, PostParams};
use mesh_core::install::{INSTALLED_RESOURCES, MIN_KUBERNETES, NAMESPACE};

/// Skew beyond this is worth a warning. Certificates start 20 s in the past to absorb
/// small differences (the CA's allowance); beyond that, new proxies reject fresh
/// certificates, so even a few seconds are worth knowing about.
const MAX_SKEW_SECS: i64 = 5;

/// `kubernetes-version`: at least [`MIN_KUBERNETES`].
pub(crate) fn version(server: &Server) -> Category {
    let mut c = Category::new("kubernetes-version");
    let (min_major, min_minor) = MIN_KUBERNETES;
    let digits = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
    let result = match (digits(&server.major), digits(&server.minor)) {
        (Some(major), Some(minor)) if (major, minor) >= (min_major, min_minor) => Ok(()),
        (Some(major), Some(minor)) => Err(format!(
            "the API server is Kubernetes {major}.{minor} ({}); mesh needs {min_major}.{min_minor} \
             or newer: upgrade the cluster",
            server.git_version
        )),
        _ => Err(format!(
            "the API server's version {:?}.{:?} ({}) is not a version this CLI can read; mesh \
             needs {min_major}.{min_minor} or newer",
            server.major, server.minor, server.git_version
        )),
    };
    c.push(Check::from(
        "k8s-version",
        "is running the minimum Kubernetes API version",
        result,
    ));
    c
}

/// `pre-kubernetes-setup`.
pub(crate) async fn setup(ctx: &Ctx, server: &Server) -> Category {
    let mut c = Category::new("pre-kubernetes-setup");
    let (namespace, permissions, admission) = tokio::join!(
        namespace_absent(ctx),
        may_create_everything(ctx),
        admission_api(ctx),
    );
    c.push(namespace);
    c.push(permissions);
    c.push(clock(server));
    c.push(admission);
    c
}

async fn namespace_absent(ctx: &Ctx) -> Check {
    const ID: &str = "pre-ns-absent";
    const WHAT: &str = "control plane namespace does not already exist";
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    match namespaces.get_opt(NAMESPACE).await {
        Ok(None) => Check::ok(ID, WHAT),
        Ok(Some(_)) => Check::error(
            ID,
            WHAT,
            format!(
                "the namespace {NAMESPACE} exists already: mesh is installed, or was; run \
                 `mesh check` to check that install, or remove it first with `mesh uninstall \
                 | kubectl delete -f -`"
            ),
        ),
        Err(e) => Check::error(
            ID,
            WHAT,
            explain(&e, &format!("cannot read the namespace {NAMESPACE}")),
        ),
    }
}

/// One SelfSubjectAccessReview per kind, concurrently; each denial named with the
/// API server's reason.
async fn may_create_everything(ctx: &Ctx) -> Check {
    const ID: &str = "pre-can-create";
    const WHAT: &str = "can create every kind of object mesh install creates";
    let reviews: Api<SelfSubjectAccessReview> = Api::all(ctx.client.clone());
    let asks = INSTALLED_RESOURCES
        .iter()
        .map(|&(group, resource, namespaced)| {
            let reviews = reviews.clone();
            async move {
                let review = SelfSubjectAccessReview {
                    spec: SelfSubjectAccessReviewSpec {
                        resource_attributes: Some(ResourceAttributes {
                            verb: Some("create".into()),
                            group: Some(group.into()),
                            resource: Some(resource.into()),
                            namespace: namespaced.then(|| NAMESPACE.to_owned()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let what = if group.is_empty() {
                    resource.to_owned()
                } else {
                    format!("{resource}.{group}")
                };
                let answer = reviews.create(&PostParams::default(), &review).await;
                (what, answer)
            }
        });
    let answers = futures_util::future::join_all(asks).await;
    let mut denied = Vec::new();
    for (what, answer) in answers {
        match answer {
            Ok(review) => {
                let status = review.status.unwrap_or_default();
                if !status.allowed {
                    let reason = status
                        .reason
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "no reason given".into());
                    denied.push(format!("may not create {what}: {reason}"));
                }
            }
            Err(e) => denied.push(explain(
                &e,
                &format!("cannot ask whether you may create {what}"),
            )),
        }
    }
    if denied.is_empty() {
        Check::ok(ID, WHAT)
    } else {
        Check::error(
            ID,
            WHAT,
            format!(
                "{} of {} kinds cannot be created by you: install as a cluster administrator, \
                 or ask one for these permissions",
                denied.len(),
                INSTALLED_RESOURCES.len()
            ),
        )
        .details(denied)
    }
}

fn clock(server: &Server) -> Check {
    const ID: &str = "pre-clock-skew";
    const WHAT: &str = "no clock skew detected";
    match server.skew_secs {
        None => Check::warning(
            ID,
            WHAT,
            "the API server sent no Date header, so the clocks could not be compared".into(),
        ),
        Some(skew) if skew.abs() <= MAX_SKEW_SECS => Check::ok(ID, WHAT),
        Some(skew) => Check::warning(
            ID,
            WHAT,
            format!(
                "the API server's clock is {}s {} this machine's (more than {MAX_SKEW_SECS}s): \
                 certificates may be refused as not yet valid; synchronize the clocks (NTP)",
                skew.abs(),
                if skew > 0 { "ahead of" } else { "behind" }
            ),
        ),
    }
}

async fn admission_api(ctx: &Ctx) -> Check {
    const ID: &str = "pre-admission-api";
    const WHAT: &str = "the admission API (admissionregistration.k8s.io/v1) is served";
    let path = "/apis/admissionregistration.k8s.io/v1";
    let request = match http::Request::get(path).body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return Check::error(ID, WHAT, format!("cannot build a request: {e}")),
    };
    match ctx
        .client
        .request::<k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList>(request)
        .await
    {
        Ok(list) => {
            let missing: Vec<&str> = [
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ]
            .into_iter()
            .filter(|r| !list.resources.iter().any(|x| x.name == *r))
            .collect();
            if missing.is_empty() {
                Check::ok(ID, WHAT)
            } else {
                Check::error(
                    ID,
                    WHAT,
                    format!(
                        "admissionregistration.k8s.io/v1 lacks {}: the proxy injector and the \
                         ServiceProfile validator cannot be registered",
                        missing.join(" and ")
                    ),
                )
            }
        }
        Err(e) if super::kube::is_not_found(&e) => Check::error(
            ID,
            WHAT,
            "the API server does not serve admissionregistration.k8s.io/v1: the proxy \
             injector and the ServiceProfile validator cannot be registered; enable the \
             admission API (--runtime-config) or use a conformant cluster"
                .into(),
        ),
        Err(e) => Check::error(
            ID,
            WHAT,
            explain(&e, "cannot read admissionregistration.k8s.io/v1"),
        ),
    }
}
