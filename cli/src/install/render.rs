//! The control plane as Kubernetes objects, built with k8s-openapi's types (a field
//! the API does not have does not compile) and printed as YAML documents in apply
//! order.
//!
//! Every name comes from `mesh_core::install`, which the injector and `mesh check`
//! read too.

use super::Config;
use anyhow::Context as _;
use k8s_openapi::{
    api::{
        admissionregistration::v1::{
            MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
            ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
        },
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
            EnvVar, HTTPGetAction, Namespace, PodAffinityTerm, PodAntiAffinity, PodSecurityContext,
            PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
            SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
            Volume, VolumeMount,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleRef, Subject},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
        util::intstr::IntOrString,
    },
    ByteString,
};
use mesh_core::install::{
    meta, names, Values, COMPONENT_LABEL, CONTROLLER_COMPONENT, NAMESPACE, VERSION,
};
use mesh_core::policy;
use serde::Serialize;
use std::collections::BTreeMap;

/// The CustomResourceDefinitions, as `manifests/crds/` holds them (the files are the
/// source: the test script validates them and this prints them; `mesh check` compares
/// the cluster's with them).
pub(crate) const CRDS: &[(&str, &str)] = &[
    (
        "serviceprofiles.mesh.rs",
        include_str!("../../../manifests/crds/serviceprofiles.yaml"),
    ),
    (
        "servers.policy.mesh.rs",
        include_str!("../../../manifests/crds/servers.yaml"),
    ),
    (
        "authorizationpolicies.policy.mesh.rs",
        include_str!("../../../manifests/crds/authorizationpolicies.yaml"),
    ),
    (
        "meshtlsauthentications.policy.mesh.rs",
        include_str!("../../../manifests/crds/meshtlsauthentications.yaml"),
    ),
    (
        "networkauthentications.policy.mesh.rs",
        include_str!("../../../manifests/crds/networkauthentications.yaml"),
    ),
    (
        "httproutes.policy.mesh.rs",
        include_str!("../../../manifests/crds/httproutes.yaml"),
    ),
];

/// The controller's ports, by name.
const PORTS: &[(&str, u16)] = &[
    ("destination", 8086),
    ("identity", 8080),
    ("webhook", 8443),
    ("api", mesh_api::control_plane::API_PORT),
    ("admin", mesh_api::control_plane::ADMIN_PORT),
];

/// The whole install (or its CRDs alone), as YAML documents.
pub fn render(config: &Config) -> anyhow::Result<String> {
    let mut out = Documents::new(&format!(
        "mesh {VERSION}: the control plane, rendered by `mesh install{}`.\n\
         Apply with `kubectl apply -f -`; check with `mesh check`.",
        if config.crds_only { " --crds" } else { "" }
    ));
    if !config.crds_only {
        out.push(&namespace())?;
    }
    for crd in crds()? {
        out.push(&crd)?;
    }
    if config.crds_only {
        return Ok(out.text);
    }
    let v = &config.values;
    out.push(&service_account())?;
    out.push(&controller_cluster_role())?;
    out.push(&controller_cluster_role_binding())?;
    out.push(&tap_user_cluster_role())?;
    out.push(&cli_role())?;
    out.push(&config_map(v)?)?;
    out.push(&trust_roots(&config.identity.anchors))?;
    out.push(&tls_secret(
        names::ISSUER,
        &config.identity.issuer_cert,
        &config.identity.issuer_key,
        None,
    ))?;
    out.push(&tls_secret(
        names::WEBHOOK_TLS,
        &config.webhook.cert,
        &config.webhook.key,
        Some(&config.webhook.ca),
    ))?;
    out.push(&service(names::DESTINATION_SERVICE, 8086, "destination"))?;
    out.push(&service(names::IDENTITY_SERVICE, 8080, "identity"))?;
    out.push(&service(names::WEBHOOK_SERVICE, 443, "webhook"))?;
    out.push(&deployment(v))?;
    if v.ha {
        out.push(&disruption_budget())?;
    }
    out.push(&injector_webhook(&config.webhook.ca))?;
    out.push(&profile_validator_webhook(&config.webhook.ca))?;
    out.push(&policy_validator_webhook(&config.webhook.ca))?;
    Ok(out.text)
}

/// What `kubectl delete -f -` needs: every cluster-scoped object and the namespace
/// (which takes everything in it), the webhooks first so the API server stops calling
/// a controller that is going away. The CRDs go too, and with them every
/// ServiceProfile, as Linkerd's uninstall does.
pub fn uninstall() -> anyhow::Result<String> {
    let mut out = Documents::new(&format!(
        "mesh {VERSION}: what `mesh uninstall` removes. Delete with `kubectl delete -f -`.\n\
         The CRDs are deleted too, and with them every ServiceProfile."
    ));
    let stub = |api_version: &str, kind: &str, name: &str| serde_json::json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
    let admission = "admissionregistration.k8s.io/v1";
    let rbac = "rbac.authorization.k8s.io/v1";
    out.push(&stub(
        admission,
        "MutatingWebhookConfiguration",
        names::INJECTOR_WEBHOOK,
    ))?;
    out.push(&stub(
        admission,
        "ValidatingWebhookConfiguration",
        names::SP_VALIDATOR_WEBHOOK,
    ))?;
    out.push(&stub(
        admission,
        "ValidatingWebhookConfiguration",
        names::POLICY_VALIDATOR_WEBHOOK,
    ))?;
    out.push(&stub(rbac, "ClusterRoleBinding", names::CONTROLLER))?;
    out.push(&stub(rbac, "ClusterRole", names::CONTROLLER))?;
    out.push(&stub(rbac, "ClusterRole", names::TAP_USER_ROLE))?;
    out.push(&stub("v1", "Namespace", NAMESPACE))?;
    for (name, _) in CRDS {
        out.push(&stub(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            name,
        ))?;
    }
    Ok(out.text)
}

/// The names the webhooks' serving certificate must carry: the Service's, short and
/// fully qualified (the API server calls `<svc>.<ns>.svc`).
pub(super) fn webhook_dns_names(values: &Values) -> Vec<String> {
    let short = format!("{}.{NAMESPACE}.svc", names::WEBHOOK_SERVICE);
    let long = format!("{short}.{}", values.cluster_domain);
    vec![short, long]
}

/// YAML documents, each led by `---`.
struct Documents {
    text: String,
}

impl Documents {
    fn new(header: &str) -> Self {
        let mut text = String::new();
        for line in header.lines() {
            text.push_str("# ");
            text.push_str(line);
            text.push('\n');
        }
        Self { text }
    }

    fn push<T: Serialize>(&mut self, object: &T) -> anyhow::Result<()> {
        let yaml = mesh_core::yaml::to_manifest_string(object).context("cannot write YAML")?;
        self.text.push_str("---\n");
        self.text.push_str(&yaml);
        if !yaml.ends_with('\n') {
            self.text.push('\n');
        }
        Ok(())
    }
}

fn crds() -> anyhow::Result<Vec<CustomResourceDefinition>> {
    CRDS.iter()
        .map(|(name, text)| {
            let crd: CustomResourceDefinition = mesh_core::yaml::from_str(text)
                .map_err(|e| anyhow::anyhow!("the built-in CRD {name} does not read: {e}"))?;
            anyhow::ensure!(
                crd.metadata.name.as_deref() == Some(name),
                "the built-in CRD file for {name} names {:?}",
                crd.metadata.name
            );
            Ok(crd)
        })
        .collect()
}

/// Labels every control-plane object carries.
fn labels(component: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/part-of".to_string(), "mesh".to_string()),
        ("app.kubernetes.io/version".to_string(), VERSION.to_string()),
    ]);
    if let Some(c) = component {
        l.insert("app.kubernetes.io/name".into(), names::CONTROLLER.into());
        l.insert(COMPONENT_LABEL.into(), c.into());
    }
    l
}

fn metadata(name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespaced.then(|| NAMESPACE.to_string()),
        labels: Some(labels(None)),
        ..Default::default()
    }
}

fn selector() -> BTreeMap<String, String> {
    BTreeMap::from([(
        COMPONENT_LABEL.to_string(),
        CONTROLLER_COMPONENT.to_string(),
    )])
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn namespace() -> Namespace {
    let mut meta = metadata(NAMESPACE, false);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    // The admission webhooks leave their own namespace alone (a controller that
    // cannot start because its own webhook is down would never come back).
    labels.insert(meta::ADMISSION_WEBHOOKS.into(), "disabled".into());
    // The controller's pods meet the restricted Pod Security Standard.
    labels.insert(
        "pod-security.kubernetes.io/enforce".into(),
        "restricted".into(),
    );
    meta.annotations = Some(BTreeMap::from([(
        meta::INJECT.to_string(),
        meta::INJECT_DISABLED.to_string(),
    )]));
    Namespace {
        metadata: meta,
        ..Default::default()
    }
}

fn service_account() -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(names::CONTROLLER, true),
        ..Default::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

/// Exactly what the controller asks of the API server, and nothing more:
/// - discovery: list and watch Services, EndpointSlices, Pods and ServiceProfiles;
/// - identity and the tap API: create TokenReviews; the tap API: SubjectAccessReviews;
/// - the proxy injector: get a pod's Namespace, the ReplicaSet and Job that own it
///   (to name the Deployment or CronJob), and create Events saying why a pod was
///   skipped (`events.k8s.io`, which kube's recorder writes, patching a repeated one).
fn controller_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: metadata(names::CONTROLLER, false),
        rules: Some(vec![
            rule(&[""], &["services", "pods"], &["list", "watch"]),
            rule(
                &["discovery.k8s.io"],
                &["endpointslices"],
                &["list", "watch"],
            ),
            rule(
                &[mesh_core::profile::GROUP],
                &[mesh_core::profile::PLURAL],
                &["list", "watch"],
            ),
            rule(&[policy::GROUP], &policy_plurals(), &["list", "watch"]),
            rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
            rule(
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
                &["create"],
            ),
            rule(&[""], &["namespaces"], &["get"]),
            rule(&["apps"], &["replicasets"], &["get"]),
            rule(&["batch"], &["jobs"], &["get"]),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        ]),
        ..Default::default()
    }
}

fn controller_cluster_role_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: metadata(names::CONTROLLER, false),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: names::CONTROLLER.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: names::CONTROLLER.into(),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        }]),
    }
}

/// For users of `mesh tap` and `mesh top`: the tap API authorizes `watch` on
/// `tap.mesh.rs`'s `tap` in the target's namespace. Bound by the cluster's admins to
/// whom they choose (a RoleBinding limits it to one namespace); nothing is bound by
/// default.
fn tap_user_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: metadata(names::TAP_USER_ROLE, false),
        rules: Some(vec![rule(&["tap.mesh.rs"], &["tap"], &["watch"])]),
        ..Default::default()
    }
}

/// For users of the CLI's observing commands (`mesh stat`, `tap`, `top`, `routes`,
/// `dashboard`): finding the controller's pod and port-forwarding to it, in
/// `mesh-system` only. Bound by the cluster's admins (a RoleBinding to this Role).
fn cli_role() -> Role {
    Role {
        metadata: metadata(names::CLI_ROLE, true),
        rules: Some(vec![
            rule(&[""], &["pods"], &["get", "list"]),
            rule(&[""], &["pods/portforward"], &["create"]),
        ]),
    }
}

fn config_map(values: &Values) -> anyhow::Result<ConfigMap> {
    let mut meta = metadata(names::CONFIG, true);
    meta.annotations = Some(BTreeMap::from([(
        meta::CREATED_BY.to_string(),
        format!("mesh/cli {VERSION}"),
    )]));
    Ok(ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(
            names::CONFIG_KEY.to_string(),
            values.to_yaml(),
        )])),
        ..Default::default()
    })
}

fn trust_roots(anchors: &str) -> ConfigMap {
    ConfigMap {
        metadata: metadata(names::TRUST_ROOTS, true),
        data: Some(BTreeMap::from([(
            names::TRUST_ROOTS_KEY.to_string(),
            anchors.to_string(),
        )])),
        ..Default::default()
    }
}

fn tls_secret(name: &str, cert: &str, key: &str, ca: Option<&str>) -> Secret {
    let mut data = BTreeMap::from([
        ("tls.crt".to_string(), ByteString(cert.as_bytes().to_vec())),
        ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
    ]);
    if let Some(ca) = ca {
        data.insert("ca.crt".into(), ByteString(ca.as_bytes().to_vec()));
    }
    Secret {
        metadata: metadata(name, true),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

fn service(name: &str, port: u16, target: &str) -> Service {
    Service {
        metadata: metadata(name, true),
        spec: Some(ServiceSpec {
            selector: Some(selector()),
            ports: Some(vec![ServicePort {
                name: Some(target.into()),
                port: port.into(),
                target_port: Some(IntOrString::String(target.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn quantities(r: &mesh_core::install::Resources) -> ResourceRequirements {
    let pick = |pairs: [(&str, &str); 2]| {
        let map: BTreeMap<String, Quantity> = pairs
            .into_iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, q)| (k.to_string(), Quantity(q.to_string())))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    ResourceRequirements {
        requests: pick([("cpu", &r.cpu_request), ("memory", &r.memory_request)]),
        limits: pick([("cpu", &r.cpu_limit), ("memory", &r.memory_limit)]),
        ..Default::default()
    }
}

fn probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        timeout_seconds: Some(1),
        ..Default::default()
    }
}

fn mount(name: &str, file: &str) -> VolumeMount {
    let dir = std::path::Path::new(file)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    VolumeMount {
        name: name.into(),
        mount_path: dir,
        read_only: Some(true),
        ..Default::default()
    }
}

/// The controller: every service in one process (destination, identity, the tap and
/// metrics APIs, both webhooks), as the restricted Pod Security Standard asks.
fn deployment(v: &Values) -> Deployment {
    let uid = i64::from(v.controller.uid);
    let args = vec![
        "--backend=kubernetes".to_string(),
        format!("--cluster-domain={}", v.cluster_domain),
        format!("--trust-domain={}", v.trust_domain),
        format!("--control-plane-namespace={NAMESPACE}"),
        format!("--identity-trust-anchors={}", names::MOUNT_TRUST_ROOTS),
        format!("--identity-issuer-cert={}", names::MOUNT_ISSUER_CERT),
        format!("--identity-issuer-key={}", names::MOUNT_ISSUER_KEY),
        format!("--identity-lifetime={}", v.identity_lifetime),
        format!("--webhook-cert={}", names::MOUNT_WEBHOOK_CERT),
        format!("--webhook-key={}", names::MOUNT_WEBHOOK_KEY),
        format!("--inject-config={}", names::MOUNT_CONFIG),
        // The policy of ports no `Server` selects, for pods without the annotation: the
        // same value the injector gives proxies (`MESH_PROXY_INBOUND_DEFAULT_POLICY`),
        // so that a proxy before the controller's first answer and the controller
        // agree.
        format!(
            "--default-inbound-policy={}",
            v.proxy.default_inbound_policy
        ),
    ];
    let container = Container {
        name: "controller".into(),
        image: Some(v.controller_image()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(vec![EnvVar {
            name: "MESH_LOG".into(),
            value: Some(v.controller.log_level.clone()),
            ..Default::default()
        }]),
        ports: Some(
            PORTS
                .iter()
                .map(|(name, port)| ContainerPort {
                    name: Some(name.to_string()),
                    container_port: i32::from(*port),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
        readiness_probe: Some(probe("/ready", 5)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..probe("/live", 10)
        }),
        resources: Some(quantities(&v.controller.resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(uid),
            capabilities: Some(Capabilities {
                drop: Some(strings(&["ALL"])),
                ..Default::default()
            }),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("trust-roots", names::MOUNT_TRUST_ROOTS),
            mount("issuer", names::MOUNT_ISSUER_CERT),
            mount("webhook-tls", names::MOUNT_WEBHOOK_CERT),
            mount("config", names::MOUNT_CONFIG),
        ]),
        ..Default::default()
    };
    // Secrets readable by the pod's group only (fsGroup), not by the world.
    let secret_volume = |name: &str, secret: &str| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    };
    let config_volume = |name: &str, map: &str| Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: map.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pod_labels = labels(Some(CONTROLLER_COMPONENT));
    pod_labels.extend(selector());
    let affinity = v.ha.then(|| Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector()),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut meta = metadata(names::CONTROLLER, true);
    meta.labels = Some(pod_labels.clone());
    Deployment {
        metadata: meta,
        spec: DeploymentSpec {
            replicas: Some(i32::try_from(v.controller_replicas()).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector()),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(if v.ha { 1 } else { 0 })),
                    max_surge: Some(IntOrString::Int(1)),
                }),
                type_: Some("RollingUpdate".into()),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        meta::INJECT.to_string(),
                        meta::INJECT_DISABLED.to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names::CONTROLLER.into()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(uid),
                        run_as_group: Some(uid),
                        fs_group: Some(uid),
                        seccomp_profile: Some(runtime_default()),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![
                        config_volume("trust-roots", names::TRUST_ROOTS),
                        secret_volume("issuer", names::ISSUER),
                        secret_volume("webhook-tls", names::WEBHOOK_TLS),
                        config_volume("config", names::CONFIG),
                    ]),
                    affinity,
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..Default::default()
    }
}

fn disruption_budget() -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(names::CONTROLLER, true),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Which namespaces the webhooks see: not the control plane's, not `kube-system`,
/// not one labelled `config.mesh.rs/admission-webhooks: disabled`.
fn webhook_namespaces() -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![
            LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: "NotIn".into(),
                values: Some(strings(&[NAMESPACE, "kube-system"])),
            },
            LabelSelectorRequirement {
                key: meta::ADMISSION_WEBHOOKS.into(),
                operator: "NotIn".into(),
                values: Some(strings(&["disabled"])),
            },
        ]),
        ..Default::default()
    }
}

fn client_config(path: &str, ca: &str) -> WebhookClientConfig {
    WebhookClientConfig {
        service: Some(ServiceReference {
            name: names::WEBHOOK_SERVICE.into(),
            namespace: NAMESPACE.into(),
            path: Some(path.into()),
            port: Some(443),
        }),
        ca_bundle: Some(ByteString(ca.as_bytes().to_vec())),
        ..Default::default()
    }
}

fn injector_webhook(ca: &str) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: metadata(names::INJECTOR_WEBHOOK, false),
        webhooks: Some(vec![MutatingWebhook {
            name: "inject.mesh.rs".into(),
            client_config: client_config(names::INJECT_PATH, ca),
            rules: Some(vec![RuleWithOperations {
                operations: Some(strings(&["CREATE"])),
                api_groups: Some(strings(&[""])),
                api_versions: Some(strings(&["v1"])),
                resources: Some(strings(&["pods"])),
                scope: Some("Namespaced".into()),
            }]),
            namespace_selector: Some(webhook_namespaces()),
            // The control plane's own pods are never injected.
            object_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: COMPONENT_LABEL.into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                }]),
                ..Default::default()
            }),
            failure_policy: Some("Ignore".into()),
            // It writes an Event when it skips a pod, never for a dry run.
            side_effects: "NoneOnDryRun".into(),
            admission_review_versions: strings(&["v1"]),
            timeout_seconds: Some(10),
            reinvocation_policy: Some("Never".into()),
            ..Default::default()
        }]),
    }
}

fn profile_validator_webhook(ca: &str) -> ValidatingWebhookConfiguration {
    validator_webhook(
        names::SP_VALIDATOR_WEBHOOK,
        "serviceprofiles.mesh.rs",
        names::VALIDATE_SP_PATH,
        (mesh_core::profile::GROUP, mesh_core::profile::VERSION),
        &[mesh_core::profile::PLURAL],
        ca,
    )
}

/// A validating webhook of the controller's: CREATE and UPDATE of `resources` posted
/// to `path`, failing open, never in the control plane's or kube-system's namespace.
fn validator_webhook(
    config_name: &str,
    hook_name: &str,
    path: &str,
    (group, version): (&str, &str),
    resources: &[&str],
    ca: &str,
) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: metadata(config_name, false),
        webhooks: Some(vec![ValidatingWebhook {
            name: hook_name.into(),
            client_config: client_config(path, ca),
            rules: Some(vec![RuleWithOperations {
                operations: Some(strings(&["CREATE", "UPDATE"])),
                api_groups: Some(strings(&[group])),
                api_versions: Some(strings(&[version])),
                resources: Some(strings(resources)),
                scope: Some("Namespaced".into()),
            }]),
            namespace_selector: Some(webhook_namespaces()),
            failure_policy: Some("Ignore".into()),
            side_effects: "None".into(),
            admission_review_versions: strings(&["v1"]),
            timeout_seconds: Some(10),
            ..Default::default()
        }]),
    }
}

/// The policy kinds' resource names (`servers`, ...), as RBAC and the webhook name them.
fn policy_plurals() -> Vec<&'static str> {
    policy::Kind::ALL.iter().map(|k| k.plural()).collect()
}

/// The policy kinds checked by the controller's `policy::validate_value`, every problem
/// with its field path in the denial.
fn policy_validator_webhook(ca: &str) -> ValidatingWebhookConfiguration {
    validator_webhook(
        names::POLICY_VALIDATOR_WEBHOOK,
        policy::GROUP,
        names::VALIDATE_POLICY_PATH,
        (policy::GROUP, policy::VERSION),
        &policy_plurals(),
        ca,
    )
}
