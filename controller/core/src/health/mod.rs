//! Health checks, as `mesh check` reports them and as the controller answers them for
//! the dashboard (`/api/health`): one shape ([`Check`], [`Category`], the JSON of
//! `mesh check -o json`), one set of certificate rules ([`certs`], [`push_validity`]),
//! and the IDs and wording of the checks both make, each explained in `docs/checks.md`
//! under its ID.

pub mod certs;

use serde::Serialize;
use std::time::SystemTime;

/// A check's ID and what it says when it passes.
pub type Named = (&'static str, &'static str);

/// The trust anchors' two checks: valid now, valid for 60 days.
pub const ANCHORS: [Named; 2] = [
    (
        "identity-anchors",
        "trust anchors are within their validity period",
    ),
    (
        "identity-anchors-60d",
        "trust anchors are valid for at least 60 days",
    ),
];
/// The identity issuer's two checks.
pub const ISSUER: [Named; 2] = [
    (
        "identity-issuer",
        "issuer certificate is within its validity period",
    ),
    (
        "identity-issuer-60d",
        "issuer certificate is valid for at least 60 days",
    ),
];
/// The webhooks' serving certificate's two checks.
pub const WEBHOOK_CERT: [Named; 2] = [
    (
        "webhook-cert",
        "webhook serving certificate is within its validity period",
    ),
    (
        "webhook-cert-60d",
        "webhook serving certificate is valid for at least 60 days",
    ),
];
/// What renewing each takes, said when it expires or soon will.
pub const RENEW_ANCHORS: &str =
    "replace the trust anchors and the issuer together, then restart every meshed pod";
pub const RENEW_ISSUER: &str =
    "issue a new one from the trust anchors and replace the Secret's tls.crt and tls.key";
pub const RENEW_WEBHOOK_CERT: &str =
    "re-run `mesh install | kubectl apply -f -` for a new one, then restart the controller";

/// Where each check is explained, by its ID as the anchor. One place, so that the
/// hints follow the docs when they move.
pub const DOCS: &str = "docs/checks.md";

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Success,
    /// Worth fixing; does not fail the run.
    Warning,
    Error,
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Stable: the docs anchor, the JSON's `id`.
    pub id: &'static str,
    pub description: &'static str,
    pub result: Verdict,
    /// What failed and what to run, when it did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The docs anchor, when it did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// One line per object at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Whether waiting may mend it (`mesh check --wait`).
    #[serde(skip)]
    pub retry: bool,
}

impl Check {
    pub fn ok(id: &'static str, description: &'static str) -> Self {
        Self {
            id,
            description,
            result: Verdict::Success,
            error: None,
            hint: None,
            details: Vec::new(),
            retry: false,
        }
    }

    pub fn error(id: &'static str, description: &'static str, why: String) -> Self {
        Self {
            result: Verdict::Error,
            error: Some(why),
            hint: Some(format!("see {DOCS}#{id} for hints")),
            ..Self::ok(id, description)
        }
    }

    pub fn warning(id: &'static str, description: &'static str, why: String) -> Self {
        Self {
            result: Verdict::Warning,
            ..Self::error(id, description, why)
        }
    }

    /// `Ok(())` passes, `Err(why)` fails.
    pub fn from(id: &'static str, description: &'static str, result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Self::ok(id, description),
            Err(why) => Self::error(id, description, why),
        }
    }

    pub fn details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// Marks a check that waiting may mend.
    pub fn retryable(mut self) -> Self {
        self.retry = true;
        self
    }

    pub fn wants_retry(&self) -> bool {
        self.retry && self.result == Verdict::Error
    }
}

/// A titled group of checks.
#[derive(Debug, Serialize)]
pub struct Category {
    pub name: &'static str,
    pub checks: Vec<Check>,
}

impl Category {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            checks: Vec::new(),
        }
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }
}

/// Whether no check failed (warnings pass).
pub fn success(categories: &[Category]) -> bool {
    categories
        .iter()
        .flat_map(|c| &c.checks)
        .all(|c| c.result != Verdict::Error)
}

/// Two checks of certificates: all valid now, and none expiring within 60 days (a
/// warning).
pub fn push_validity(
    c: &mut Category,
    [(valid_id, valid_what), (soon_id, soon_what)]: [Named; 2],
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

/// The report as one JSON document: `{"success": .., "categories": [{"name": ..,
/// "checks": [{"id", "description", "result", "error"?, "hint"?, "details"?}]}]}`.
pub fn json(categories: &[Category]) -> String {
    let doc = serde_json::json!({
        "success": success(categories),
        "categories": categories,
    });
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

/// The controller's discovery has synced (the controller's own check, `/api/health`).
pub const READY: Named = ("cp-ready", "the controller's discovery has synced");
/// Every meshed proxy answered the controller's last scrapes (its own check).
pub const SCRAPED: Named = (
    "dp-proxies-scraped",
    "data plane proxies answer the controller's scrapes",
);
/// The checks only the controller makes (`/api/health`), which `mesh check` does not:
/// they read the controller's own state.
pub const CONTROLLER_ONLY: [Named; 2] = [READY, SCRAPED];

/// The controller's view of the ServiceProfile CRD.
pub const PROFILES_CRD: Named = (
    "cp-profiles-crd",
    "the controller sees the ServiceProfile CRD",
);

/// `cp-profiles-crd` (a warning at worst) from what the controller found when it last
/// listed ServiceProfiles: served (`Some(true)`), not served (`Some(false)`: a 404), or
/// not listed yet (`None`).
pub fn profiles_crd(seen: Option<bool>) -> Check {
    let (id, what) = PROFILES_CRD;
    match seen {
        Some(true) => Check::ok(id, what),
        Some(false) => Check::warning(
            id,
            what,
            "the controller found serviceprofiles.mesh.rs not served when it last listed \
             profiles: it serves every service as if it had no ServiceProfile (no routes, \
             retries or timeouts); install the CRDs (`mesh install --crds | kubectl apply -f \
             -`), which it picks up within seconds, without a restart"
                .into(),
        ),
        None => Check::warning(
            id,
            what,
            "the controller has not listed ServiceProfiles yet (or is older than this CLI and \
             does not say)"
                .into(),
        ),
    }
}
