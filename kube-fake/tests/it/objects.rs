//! The kinds the fake stores without watching them, created over HTTP as `mesh
//! install | kubectl apply` and `mesh check` use them: discovery lists them, so kube's
//! `Discovery` and `Api<DynamicObject>` find them; creates, gets, lists, patches and
//! deletes answer as the API server does; and the server's own settings (`/version`,
//! the `Date` header, the admission API, authentication and denials) show to the real
//! client.

use k8s_openapi::api::{
    apps::v1::Deployment,
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::{ConfigMap, Namespace, Service},
};
use kube::{
    api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    discovery::Discovery,
    ResourceExt as _,
};
use mesh_kube_fake::{FakeKube, Kind};
use serde_json::json;

fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn config_map(ns: &str, name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "mesh"}},
        "data": {"k": "v"},
    }))
    .unwrap()
}

fn status_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        e => panic!("not an API error: {e}"),
    }
}

#[tokio::test]
async fn discovery_lists_every_kind_an_install_creates() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    let discovery = Discovery::new(api.client()?).run().await?;
    for (group, kind) in [
        ("", "Namespace"),
        ("", "ServiceAccount"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "Service"),
        ("", "Pod"),
        ("", "Event"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("policy", "PodDisruptionBudget"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
        ),
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
        ),
        ("discovery.k8s.io", "EndpointSlice"),
        ("mesh.rs", "ServiceProfile"),
    ] {
        let group = discovery
            .get(group)
            .unwrap_or_else(|| panic!("group {group:?} is discovered"));
        assert!(
            group
                .recommended_resources()
                .iter()
                .any(|(r, _)| r.kind == kind),
            "{kind} in {}",
            group.name()
        );
    }
    Ok(())
}

#[tokio::test]
async fn objects_are_created_got_listed_patched_and_deleted() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    let client = api.client()?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // Every cluster has these.
    let listed = namespaces.list(&ListParams::default()).await?;
    let names: Vec<String> = listed.items.iter().map(|n| n.name_any()).collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );

    // A namespaced object in a namespace that does not exist: 404, as the API server.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "mesh-system");
    let (code, message) = status_code(
        cms.create(&PostParams::default(), &config_map("mesh-system", "c"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404, "{message}");
    assert!(
        message.contains("namespaces \"mesh-system\" not found"),
        "{message}"
    );

    let before = api.resource_version();
    let ns = namespaces
        .create(&PostParams::default(), &namespace("mesh-system"))
        .await?;
    assert!(ns.metadata.uid.is_some());
    assert_eq!(ns.labels()["kubernetes.io/metadata.name"], "mesh-system");
    assert!(
        api.resource_version() > before,
        "a create moves the global resourceVersion"
    );
    let created = cms
        .create(&PostParams::default(), &config_map("mesh-system", "c"))
        .await?;
    assert_eq!(created.data.as_ref().unwrap()["k"], "v");
    let (code, message) = status_code(
        cms.create(&PostParams::default(), &config_map("mesh-system", "c"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409, "{message}");
    assert!(
        message.contains("configmaps \"c\" already exists"),
        "{message}"
    );

    // A Secret's stringData is stored as data, as the API server stores it.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "mesh-system");
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "s"}, "stringData": {"tls.crt": "PEM"},
    }))?;
    let stored = secrets.create(&PostParams::default(), &secret).await?;
    assert_eq!(stored.data.unwrap()["tls.crt"].0, b"PEM");
    assert!(stored.string_data.is_none());

    // Lists by label; the test's side sees what HTTP created.
    let listed = cms.list(&ListParams::default().labels("app=mesh")).await?;
    assert_eq!(listed.items.len(), 1);
    assert!(cms
        .list(&ListParams::default().labels("app=other"))
        .await?
        .items
        .is_empty());
    assert_eq!(
        api.get_object("v1", "ConfigMap", "mesh-system", "c")
            .unwrap()["data"]["k"],
        "v"
    );

    // A merge patch changes what it names and keeps identity; apply creates.
    let patched = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w"}})),
        )
        .await?;
    assert_eq!(patched.data.as_ref().unwrap()["k"], "w");
    assert_eq!(patched.metadata.uid, created.metadata.uid);
    let applied = cms
        .patch(
            "d",
            &PatchParams::apply("test"),
            &Patch::Apply(config_map("mesh-system", "d")),
        )
        .await?;
    assert_eq!(applied.name_any(), "d");

    // Cluster-scoped and apps/v1 kinds, through the dynamic API as `kubectl apply`.
    let discovery = Discovery::new(client.clone()).run().await?;
    let (deploy, _) = discovery
        .get("apps")
        .unwrap()
        .recommended_kind("Deployment")
        .unwrap();
    let deployments: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "mesh-system", &deploy);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "mesh-controller", "namespace": "mesh-system"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}},
    }))?;
    deployments.create(&PostParams::default(), &obj).await?;
    let typed: Api<Deployment> = Api::namespaced(client.clone(), "mesh-system");
    assert_eq!(typed.get("mesh-controller").await?.spec.replicas, Some(1));

    // A Service over HTTP lands in the watched store, seen by `FakeKube::get`.
    let services: Api<Service> = Api::namespaced(client.clone(), "mesh-system");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "mesh-destination"},
        "spec": {"ports": [{"port": 8086}]},
    }))?;
    services.create(&PostParams::default(), &svc).await?;
    assert!(api
        .get(Kind::Service, "mesh-system", "mesh-destination")
        .is_some());

    // Deletes, and 404 after.
    cms.delete("c", &DeleteParams::default()).await?;
    let (code, _) = status_code(cms.get("c").await.unwrap_err());
    assert_eq!(code, 404);
    services
        .delete("mesh-destination", &DeleteParams::default())
        .await?;
    assert!(api
        .get(Kind::Service, "mesh-system", "mesh-destination")
        .is_none());
    assert!(api.delete_object("v1", "Namespace", "", "mesh-system"));
    assert!(namespaces.get_opt("mesh-system").await?.is_none());
    Ok(())
}

async fn may(client: &kube::Client, verb: &str, group: &str, resource: &str) -> (bool, String) {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let status = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    (status.allowed, status.reason.unwrap_or_default())
}

#[tokio::test]
async fn self_reviews_answer_for_the_caller_and_denials_refuse_requests() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    let admin = api.client()?;
    // The kubeconfig's user is the cluster's administrator.
    assert!(may(&admin, "create", "apps", "deployments").await.0);
    api.deny("create", "apps", "deployments");
    let (allowed, reason) = may(&admin, "create", "apps", "deployments").await;
    assert!(!allowed);
    assert!(
        reason.contains("deny create on deployments.apps"),
        "{reason}"
    );
    assert!(may(&admin, "create", "", "configmaps").await.0);

    // A user named by a token gets only what was allowed to them.
    api.add_token("t-alice", "alice", &["devs"]);
    api.allow("alice", "list", "", "configmaps", None);
    let mut config = kube::Config::new(api.url().parse()?);
    config.auth_info.token = Some("t-alice".to_string().into());
    let alice = kube::Client::try_from(config)?;
    assert!(may(&alice, "list", "", "configmaps").await.0);
    let (allowed, reason) = may(&alice, "create", "", "configmaps").await;
    assert!(!allowed && reason.contains("\"alice\""), "{reason}");

    // A denial refuses the request itself with the API server's 403.
    api.deny("list", "", "configmaps");
    let cms: Api<ConfigMap> = Api::all(admin.clone());
    let (code, message) = status_code(cms.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("User \"kubernetes-admin\" cannot list resource \"configmaps\""),
        "{message}"
    );

    // Strict authentication: an unknown token is a 401.
    api.set_authenticate(true);
    let mut config = kube::Config::new(api.url().parse()?);
    config.auth_info.token = Some("nobody".to_string().into());
    let nobody = kube::Client::try_from(config)?;
    let (code, _) = status_code(nobody.apiserver_version().await.unwrap_err());
    assert_eq!(code, 401);
    // A known token still gets answers (the denial above applies to alice too).
    assert!(!may(&alice, "list", "", "configmaps").await.0);
    assert_eq!(alice.apiserver_version().await?.minor, "33");
    Ok(())
}

#[tokio::test]
async fn version_clock_and_admission_api_are_settable() -> anyhow::Result<()> {
    let api = FakeKube::start().await?;
    let client = api.client()?;
    api.set_version("1", "29");
    let version = client.apiserver_version().await?;
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "29")
    );

    let date = |offset: i64| {
        let api = &api;
        async move {
            api.set_clock_offset(offset);
            let rsp = reqwest_date(api).await;
            let server = httpdate(&rsp);
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            server - now
        }
    };
    assert!(date(0).await.abs() <= 2);
    let skew = date(-300).await;
    assert!((-302..=-298).contains(&skew), "{skew}");

    let served = |discovery: &Discovery| discovery.get("admissionregistration.k8s.io").is_some();
    assert!(served(&Discovery::new(client.clone()).run().await?));
    api.set_admission_api(false);
    assert!(!served(&Discovery::new(client.clone()).run().await?));
    let hooks: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(client);
    let (code, _) = status_code(hooks.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 404);
    Ok(())
}

/// The `Date` header of a GET of `/version`, over a plain connection.
async fn reqwest_date(api: &FakeKube) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    conn.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("date: "))
        .unwrap_or_else(|| panic!("a Date header in {out}"))
        .to_owned()
}

/// Reads `Mon, 07 Dec 2026 04:36:27 GMT` as Unix seconds.
fn httpdate(s: &str) -> i64 {
    let parts: Vec<&str> = s.split([' ', ':']).collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])
    .unwrap() as u8
        + 1;
    let date = time::Date::from_calendar_date(
        parts[3].parse().unwrap(),
        time::Month::try_from(month).unwrap(),
        parts[1].parse().unwrap(),
    )
    .unwrap();
    let t = time::Time::from_hms(
        parts[4].parse().unwrap(),
        parts[5].parse().unwrap(),
        parts[6].parse().unwrap(),
    )
    .unwrap();
    time::PrimitiveDateTime::new(date, t)
        .assume_utc()
        .unix_timestamp()
}
