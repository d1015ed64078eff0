//! The certificates of an install: the identity's trust anchors and issuer
//! (`mesh-identity`: valid now, 60 days out, the issuer chained to the anchors with
//! its own key, as the controller loads them) and the admission webhooks' serving
//! certificate and both configurations (`mesh-webhooks`: valid, for the webhook
//! Service, signed by its CA, and each configuration calling that Service at its path
//! with a `caBundle` that verifies it).

use super::{
    installed::{config_map_key, secret_key, INSTALL},
    kube::explain,
    Category, Check, Ctx,
};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::api::Api;
use mesh_core::{
    health::{self, certs, push_validity},
    install::{names, Values, NAMESPACE},
};
use std::time::SystemTime;

// === mesh-identity ===

pub(crate) async fn identity(ctx: &Ctx, values: &Values, now: SystemTime) -> Category {
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
        health::ANCHORS,
        anchors
            .as_ref()
            .map(|(ders, _)| ders.clone())
            .map_err(Clone::clone),
        now,
        health::RENEW_ANCHORS,
    );
    push_validity(
        &mut c,
        health::ISSUER,
        issuer
            .as_ref()
            .map(|(der, _)| vec![der.clone()])
            .map_err(Clone::clone),
        now,
        health::RENEW_ISSUER,
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

// === mesh-webhooks ===

pub(crate) async fn webhooks(ctx: &Ctx, now: SystemTime) -> Category {
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
    push_validity(
        &mut c,
        health::WEBHOOK_CERT,
        cert.clone().map(|d| vec![d]),
        now,
        health::RENEW_WEBHOOK_CERT,
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
