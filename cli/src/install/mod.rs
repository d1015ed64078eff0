//! `mesh install` and `mesh uninstall`: the control plane's manifests, printed for
//! `kubectl apply -f -` and `kubectl delete -f -`.
//!
//! Nothing here talks to a cluster: the flags become a [`Config`] (every file read and
//! checked, every `--set` applied to the [`Values`]), and [`render`] turns it into
//! Kubernetes objects, in the order they must be applied (the namespace, the CRDs, the
//! accounts and RBAC, the configuration and certificates, the controller, and last the
//! webhook configurations, so the API server never calls a webhook that is not there
//! yet; with `failurePolicy: Ignore` it would not block, but it would skip pods).
//!
//! Certificates: the trust anchor and the identity issuer, and the webhooks' CA and
//! serving certificate, are made fresh on every run (valid one year, as Linkerd's), or
//! read from the `--identity-*-file` and `--webhook-*-file` flags, all of a group or
//! none, checked before anything is printed (an issuer that the anchors did not sign,
//! or that is expired, is refused here rather than by a controller that would not
//! start).

mod render;

use crate::UsageError;
use mesh_core::install::Values;
use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

pub(crate) use render::CRDS;
pub use render::{render, uninstall};

/// How long generated certificates are valid.
const GENERATED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Certificates start a little in the past, so a cluster whose clock is behind
/// accepts them at once.
const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Only the CustomResourceDefinitions (to apply first, for GitOps ordering).
    #[arg(long)]
    pub crds: bool,
    /// The registry both images come from (`<registry>/mesh-proxy:<tag>`).
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,
    /// The images' tag (default: this CLI's version).
    #[arg(long, value_name = "TAG")]
    pub image_tag: Option<String>,
    /// High availability: 3 controller replicas on different nodes, and a
    /// PodDisruptionBudget.
    #[arg(long)]
    pub ha: bool,
    /// The cluster's DNS domain.
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// The identity trust domain (the suffix of every workload's identity).
    #[arg(long, value_name = "DOMAIN")]
    pub identity_trust_domain: Option<String>,
    /// An install value, as the `mesh-config` ConfigMap spells it
    /// (`proxy.logLevel=debug`, `proxy.resources.memoryLimit=128Mi`,
    /// `proxy.skipOutboundPorts=3306`, `controller.replicas=2`); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The trust anchors (PEM), instead of a generated anchor.
    #[arg(long, value_name = "FILE")]
    pub identity_trust_anchors_file: Option<PathBuf>,
    /// The issuer's certificate (PEM), signed by the trust anchors.
    #[arg(long, value_name = "FILE")]
    pub identity_issuer_certificate_file: Option<PathBuf>,
    /// The issuer's private key (PEM, PKCS#8).
    #[arg(long, value_name = "FILE")]
    pub identity_issuer_key_file: Option<PathBuf>,
    /// The webhooks' CA (PEM), which the webhook configurations carry as caBundle.
    #[arg(long, value_name = "FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// The webhooks' serving certificate (PEM), for `mesh-webhook.mesh-system.svc`.
    #[arg(long, value_name = "FILE")]
    pub webhook_certificate_file: Option<PathBuf>,
    /// The webhooks' private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub webhook_key_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {}

/// A validated install: the values and the certificates, all PEM.
#[derive(Clone, Debug)]
pub struct Config {
    pub crds_only: bool,
    pub values: Values,
    pub identity: Identity,
    pub webhook: WebhookTls,
}

/// The trust anchors and the issuer the identity service signs with.
#[derive(Clone, Debug)]
pub struct Identity {
    pub anchors: String,
    pub issuer_cert: String,
    pub issuer_key: String,
}

/// The admission webhooks' serving certificate and the CA the API server checks it
/// against.
#[derive(Clone, Debug)]
pub struct WebhookTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl TryFrom<InstallArgs> for Config {
    type Error = UsageError;

    fn try_from(args: InstallArgs) -> Result<Self, UsageError> {
        let mut values = Values::default();
        if let Some(registry) = args.registry {
            image_part("--registry", &registry)?;
            values.registry = registry.trim_end_matches('/').to_string();
        }
        if let Some(tag) = args.image_tag {
            image_part("--image-tag", &tag)?;
            values.image_tag = tag;
        }
        values.ha = args.ha;
        if let Some(domain) = args.cluster_domain {
            dns_domain("--cluster-domain", &domain)?;
            values.cluster_domain = domain;
        }
        if let Some(domain) = args.identity_trust_domain {
            dns_domain("--identity-trust-domain", &domain)?;
            values.trust_domain = domain;
        }
        for set in &args.set {
            let Some((key, value)) = set.split_once('=') else {
                return Err(UsageError::new(format!(
                    "--set {set:?}: expected KEY=VALUE (e.g. proxy.logLevel=debug)"
                )));
            };
            values
                .set(key.trim(), value)
                .map_err(|e| UsageError::new(e.to_string()))?;
        }
        check_values(&values)?;

        let now = SystemTime::now();
        let identity = match (
            args.identity_trust_anchors_file,
            args.identity_issuer_certificate_file,
            args.identity_issuer_key_file,
        ) {
            (None, None, None) => {
                let (anchors, issuer_cert, issuer_key) =
                    mesh_core::ca::generate_anchor_and_issuer_between(
                        &values.trust_domain,
                        now - BACKDATE,
                        now + GENERATED_VALIDITY,
                    );
                Identity {
                    anchors,
                    issuer_cert,
                    issuer_key,
                }
            }
            (Some(anchors), Some(cert), Some(key)) => {
                let identity = Identity {
                    anchors: read("--identity-trust-anchors-file", &anchors)?,
                    issuer_cert: read("--identity-issuer-certificate-file", &cert)?,
                    issuer_key: read("--identity-issuer-key-file", &key)?,
                };
                check_identity(&identity, &values, now)?;
                identity
            }
            _ => {
                return Err(UsageError::new(
                    "--identity-trust-anchors-file, --identity-issuer-certificate-file and \
                     --identity-issuer-key-file go together: give all three, or none for \
                     generated ones",
                ))
            }
        };
        let webhook = match (
            args.webhook_ca_file,
            args.webhook_certificate_file,
            args.webhook_key_file,
        ) {
            (None, None, None) => {
                let (ca, cert, key) = mesh_core::ca::generate_serving_cert_between(
                    &format!("webhook.{}", mesh_core::install::NAMESPACE),
                    &render::webhook_dns_names(&values),
                    now - BACKDATE,
                    now + GENERATED_VALIDITY,
                )
                .map_err(UsageError::new)?;
                WebhookTls { ca, cert, key }
            }
            (Some(ca), Some(cert), Some(key)) => {
                let tls = WebhookTls {
                    ca: read("--webhook-ca-file", &ca)?,
                    cert: read("--webhook-certificate-file", &cert)?,
                    key: read("--webhook-key-file", &key)?,
                };
                pem_has("--webhook-ca-file", &tls.ca, "CERTIFICATE")?;
                pem_has("--webhook-certificate-file", &tls.cert, "CERTIFICATE")?;
                pem_has("--webhook-key-file", &tls.key, "PRIVATE KEY")?;
                tls
            }
            _ => {
                return Err(UsageError::new(
                    "--webhook-ca-file, --webhook-certificate-file and --webhook-key-file go \
                     together: give all three, or none for generated ones",
                ))
            }
        };
        Ok(Self {
            crds_only: args.crds,
            values,
            identity,
            webhook,
        })
    }
}

/// Prints the install's manifests.
pub fn run(config: &Config) -> anyhow::Result<()> {
    crate::out(&render(config)?);
    Ok(())
}

/// Prints what `kubectl delete -f -` needs to remove the control plane.
pub fn run_uninstall(_: UninstallArgs) -> anyhow::Result<()> {
    crate::out(&uninstall()?);
    Ok(())
}

/// A registry or tag: not empty, no whitespace (it goes into an image reference).
fn image_part(flag: &str, value: &str) -> Result<(), UsageError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c == '@') {
        return Err(UsageError::new(format!(
            "{flag} {value:?}: expected part of an image reference (no spaces, not empty)"
        )));
    }
    Ok(())
}

fn dns_domain(flag: &str, value: &str) -> Result<(), UsageError> {
    if mesh_api::names::is_dns_domain(value) {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "{flag} {value:?}: not a DNS domain (e.g. cluster.local)"
        )))
    }
}

/// What `--set` may have made of the values that would make a broken install.
fn check_values(values: &Values) -> Result<(), UsageError> {
    image_part("--set registry", &values.registry)?;
    image_part("--set imageTag", &values.image_tag)?;
    dns_domain("--set clusterDomain", &values.cluster_domain)?;
    dns_domain("--set trustDomain", &values.trust_domain)?;
    mesh_api::duration::parse(&values.identity_lifetime).map_err(|e| {
        UsageError::new(format!(
            "--set identityLifetime={:?}: {e}",
            values.identity_lifetime
        ))
    })?;
    if values.controller.replicas == 0 {
        return Err(UsageError::new(
            "--set controller.replicas=0: the controller needs at least one replica",
        ));
    }
    for (key, uid) in [
        ("controller.uid", values.controller.uid),
        ("proxy.uid", values.proxy.uid),
    ] {
        if uid == 0 {
            return Err(UsageError::new(format!(
                "--set {key}=0: the control plane and the proxy run as non-root users"
            )));
        }
    }
    // The proxy's settings by the injector's own rules (ports, quantities, a request
    // within its limit, the log filter, the image and tag), so a value the injector
    // would refuse at every pod fails here instead.
    mesh_core::inject::settings::check_values(values)
        .map_err(|e| UsageError::new(format!("--set: {e}")))?;
    Ok(())
}

fn read(flag: &str, path: &PathBuf) -> Result<String, UsageError> {
    std::fs::read_to_string(path)
        .map_err(|e| UsageError::new(format!("{flag} {}: {e}", path.display())))
}

fn pem_has(flag: &str, pem: &str, label: &str) -> Result<(), UsageError> {
    if pem.contains(&format!("-----BEGIN {label}-----"))
        || (label == "PRIVATE KEY" && pem.contains("PRIVATE KEY-----"))
    {
        Ok(())
    } else {
        Err(UsageError::new(format!("{flag}: no {label} in PEM")))
    }
}

/// The identity files as the identity service will judge them when it starts: the
/// issuer a P-256 CA signed by the anchors, valid now, with its own key.
fn check_identity(identity: &Identity, values: &Values, now: SystemTime) -> Result<(), UsageError> {
    let lifetime = mesh_api::duration::parse(&values.identity_lifetime).unwrap_or_default();
    mesh_core::ca::Ca::new(
        &values.trust_domain,
        lifetime,
        &identity.issuer_cert,
        &identity.issuer_key,
        &identity.anchors,
        now,
    )
    .map(drop)
    .map_err(|e| UsageError::new(format!("the identity files cannot be used: {e}")))
}

#[cfg(test)]
mod tests;
