//! `GET /api/health`: the control plane's health as the controller sees it from the
//! inside, for the dashboard's overview, in `mesh check -o json`'s shape
//! (`{"version", "success", "categories": [{"name", "checks": [...]}]}`) and with
//! `mesh check`'s IDs and rules where a check is the same (`mesh_core::health`; each ID
//! explained in `docs/checks.md`):
//!
//! - `mesh-control-plane`: `cp-ready` (the controller's discovery has synced: its
//!   Kubernetes watches, or its file), and with the Kubernetes backend
//!   `cp-profiles-crd`;
//! - `mesh-identity` (with the identity service on): the trust anchors and the issuer
//!   the controller signs with, valid now and for 60 days;
//! - `mesh-webhooks` (with the webhook on): the serving certificate it serves now;
//! - `mesh-data-plane`: `dp-proxies-scraped`, every meshed proxy answered the
//!   controller's last round of scrapes.
//!
//! What only the Kubernetes API can tell (the webhook configurations, RBAC, the pods'
//! own readiness) stays `mesh check`'s: it needs the caller's rights, not the
//! controller's.

use crate::{
    index::Index,
    k8s,
    scrape::{Round, Store},
    webhook::tls::ReloadingCert,
};
use mesh_core::{
    ca::Ca,
    health::{self, push_validity, Category, Check},
};
use std::{sync::Arc, time::SystemTime};

/// What the controller's health is read from; each part is `None` when that part is
/// off.
#[derive(Clone, Debug, Default)]
pub struct Parts {
    pub ca: Option<Arc<Ca>>,
    pub webhook_cert: Option<Arc<ReloadingCert>>,
    pub kube: Option<Arc<k8s::Status>>,
}

/// The checks, now.
pub fn categories(parts: &Parts, index: &Index, store: &Store, now: SystemTime) -> Vec<Category> {
    let mut out = Vec::new();

    let mut cp = Category::new("mesh-control-plane");
    let (id, what) = health::READY;
    cp.push(if index.is_ready() {
        Check::ok(id, what)
    } else if parts.kube.is_some() {
        Check::error(
            id,
            what,
            "its Kubernetes watches have not all listed yet: until they have, it answers \
             nothing about services (see its log: `kubectl -n mesh-system logs \
             deploy/mesh-controller`)"
                .into(),
        )
    } else {
        Check::error(
            id,
            what,
            "its discovery file has not been read yet (see its log)".into(),
        )
    });
    if let Some(status) = &parts.kube {
        cp.push(health::profiles_crd(status.profiles_crd()));
    }
    out.push(cp);

    if let Some(ca) = &parts.ca {
        let mut c = Category::new("mesh-identity");
        push_validity(
            &mut c,
            health::ANCHORS,
            Ok(ca.anchors().to_vec()),
            now,
            health::RENEW_ANCHORS,
        );
        push_validity(
            &mut c,
            health::ISSUER,
            Ok(vec![ca.issuer().to_vec()]),
            now,
            health::RENEW_ISSUER,
        );
        out.push(c);
    }

    if let Some(cert) = &parts.webhook_cert {
        let mut c = Category::new("mesh-webhooks");
        let leaf = cert
            .current()
            .cert
            .first()
            .map(|der| vec![der.to_vec()])
            .ok_or_else(|| "the webhook serves no certificate".to_string());
        push_validity(
            &mut c,
            health::WEBHOOK_CERT,
            leaf,
            now,
            health::RENEW_WEBHOOK_CERT,
        );
        out.push(c);
    }

    let mut dp = Category::new("mesh-data-plane");
    dp.push(scraped(store.last_round()));
    out.push(dp);
    out
}

/// `dp-proxies-scraped` from the last round's outcomes.
fn scraped(round: Option<Round>) -> Check {
    let (id, what) = health::SCRAPED;
    let Some(round) = round else {
        return Check::warning(
            id,
            what,
            "the controller has not scraped its proxies yet (it starts once discovery has \
             synced)"
                .into(),
        );
    };
    let failed: Vec<String> = round
        .iter()
        .filter_map(|(pod, why)| Some(format!("{pod}: {}", why.as_deref()?)))
        .collect();
    if failed.is_empty() {
        return Check::ok(id, what).details(vec![match round.len() {
            0 => "no meshed pod yet".to_string(),
            1 => "1 proxy answered".to_string(),
            n => format!("{n} proxies answered"),
        }]);
    }
    Check::warning(
        id,
        what,
        format!(
            "{} of {} proxies did not answer their last scrape: their numbers are missing \
             from stat, top and the dashboard until they do",
            failed.len(),
            round.len()
        ),
    )
    .details(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::health::Verdict;

    #[test]
    fn scrapes_are_judged_from_the_last_round() {
        let c = scraped(None);
        assert_eq!(c.result, Verdict::Warning);
        let c = scraped(Some(vec![]));
        assert_eq!(c.result, Verdict::Success);
        assert_eq!(c.details, ["no meshed pod yet"]);
        let c = scraped(Some(vec![
            ("demo/web-1".into(), None),
            (
                "demo/web-2".into(),
                Some("127.0.0.1:4191: timed out".into()),
            ),
        ]));
        assert_eq!(c.result, Verdict::Warning);
        assert_eq!(c.details, ["demo/web-2: 127.0.0.1:4191: timed out"]);
        assert!(c.error.unwrap().starts_with("1 of 2 proxies"));
        let c = scraped(Some(vec![("demo/web-1".into(), None)]));
        assert_eq!(
            (c.result, c.details),
            (Verdict::Success, vec!["1 proxy answered".into()])
        );
    }
}
