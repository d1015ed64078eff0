//! The controller's own counters, and their Prometheus text rendering.
//!
//! Handles are plain atomics built once and shared by `Arc`: the gRPC layer counts
//! streams and updates without locks, and the admin server reads them, together with
//! the index's sizes and `/proc/self`, only when scraped.
//!
//! This module imports no feature's types: features count through plain values
//! (`certify("ok")`, `file_load(true)`), or own their counters and render them
//! themselves as a [`Family`] (the webhook's reviews).

use crate::index::{Index, Resource};
use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

/// Counters of the destination service.
#[derive(Debug, Default)]
pub struct Metrics {
    get_streams: AtomicI64,
    profile_streams: AtomicI64,
    policy_streams: AtomicI64,
    updates_sent: AtomicU64,
    file_loads_applied: AtomicU64,
    file_loads_rejected: AtomicU64,
    certify: [AtomicU64; CERTIFY_RESULTS.len()],
    token_review_errors: [AtomicU64; TOKEN_REVIEW_ERRORS.len()],
    /// Series that features own and render themselves (the admission webhook's
    /// decisions, once it runs), in the order they were exported.
    families: Mutex<Vec<Arc<dyn Family>>>,
}

/// Series a feature owns: its counters, rendered in the Prometheus text format (with
/// `header`) at each scrape, after the controller's own.
pub trait Family: Send + Sync + std::fmt::Debug {
    fn render(&self, out: &mut String);
}

/// The outcomes of `mesh.identity.Identity/Certify` (the `result` label).
pub const CERTIFY_RESULTS: [&str; 11] = [
    "ok",
    "invalid_request",
    "bad_token",
    "token_unavailable",
    "identity_mismatch",
    "invalid_identity",
    "malformed_csr",
    "bad_signature",
    "weak_key",
    "unsupported_key",
    "internal",
];

/// Why the identity service could not review a token (the `reason` label):
/// `forbidden` (RBAC: the controller may not create TokenReviews), `unauthorized` (its
/// own credentials refused), `unavailable` (the API server did not answer).
pub const TOKEN_REVIEW_ERRORS: [&str; 3] = ["forbidden", "unauthorized", "unavailable"];

/// Which RPC a stream serves (the `kind` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Get,
    Profile,
    /// `mesh.policy.InboundPolicies/Watch`.
    Policy,
}

// === impl Metrics ===

impl Metrics {
    fn gauge(&self, kind: StreamKind) -> &AtomicI64 {
        match kind {
            StreamKind::Get => &self.get_streams,
            StreamKind::Profile => &self.profile_streams,
            StreamKind::Policy => &self.policy_streams,
        }
    }

    pub(crate) fn stream_opened(&self, kind: StreamKind) {
        self.gauge(kind).fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_closed(&self, kind: StreamKind) {
        self.gauge(kind).fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn update_sent(&self) {
        self.updates_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a read of the discovery file that changed: applied, or rejected
    /// (unreadable or invalid; the last good state stays).
    pub(crate) fn file_load(&self, applied: bool) {
        let counter = match applied {
            true => &self.file_loads_applied,
            false => &self.file_loads_rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads of the discovery file that were applied (`true`) or rejected.
    pub fn file_loads(&self, applied: bool) -> u64 {
        match applied {
            true => self.file_loads_applied.load(Ordering::Relaxed),
            false => self.file_loads_rejected.load(Ordering::Relaxed),
        }
    }

    /// Counts a `Certify` outcome, one of [`CERTIFY_RESULTS`].
    pub(crate) fn certify(&self, result: &str) {
        match CERTIFY_RESULTS.iter().position(|r| *r == result) {
            Some(i) => self.certify[i].fetch_add(1, Ordering::Relaxed),
            None => {
                debug_assert!(false, "unknown certify result {result}");
                0
            }
        };
    }

    /// `Certify` calls that ended with `result`.
    pub fn certify_total(&self, result: &str) -> u64 {
        CERTIFY_RESULTS
            .iter()
            .position(|r| *r == result)
            .map_or(0, |i| self.certify[i].load(Ordering::Relaxed))
    }

    /// Counts a token the identity service could not review, one of
    /// [`TOKEN_REVIEW_ERRORS`].
    pub(crate) fn token_review_error(&self, reason: &str) {
        match TOKEN_REVIEW_ERRORS.iter().position(|r| *r == reason) {
            Some(i) => self.token_review_errors[i].fetch_add(1, Ordering::Relaxed),
            None => {
                debug_assert!(false, "unknown token review error {reason}");
                0
            }
        };
    }

    /// Tokens the identity service could not review, for `reason`.
    pub fn token_review_errors_total(&self, reason: &str) -> u64 {
        TOKEN_REVIEW_ERRORS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.token_review_errors[i].load(Ordering::Relaxed))
    }

    /// Open streams of a kind.
    pub fn streams(&self, kind: StreamKind) -> i64 {
        self.gauge(kind).load(Ordering::Relaxed)
    }

    pub fn updates_sent(&self) -> u64 {
        self.updates_sent.load(Ordering::Relaxed)
    }

    /// Exports `family`'s series from now on.
    pub fn export(&self, family: Arc<dyn Family>) {
        if let Ok(mut families) = self.families.lock() {
            families.push(family);
        }
    }

    /// Renders every controller metric in the Prometheus text format.
    pub fn render(&self, index: &Index) -> String {
        let mut out = String::with_capacity(2048);
        let stats = index.stats();

        header(
            &mut out,
            "destination_streams",
            "gauge",
            "Open destination and policy streams.",
        );
        for (kind, value) in [
            ("get", StreamKind::Get),
            ("profile", StreamKind::Profile),
            ("policy", StreamKind::Policy),
        ] {
            let _ = writeln!(
                out,
                "destination_streams{{kind=\"{kind}\"}} {}",
                self.streams(value)
            );
        }
        header(
            &mut out,
            "destination_updates_sent_total",
            "counter",
            "Messages sent on destination and policy streams.",
        );
        let _ = writeln!(
            out,
            "destination_updates_sent_total {}",
            self.updates_sent()
        );
        header(
            &mut out,
            "destination_watch_restarts_total",
            "counter",
            "Restarts of the discovery backend's watches.",
        );
        for resource in Resource::ALL {
            let _ = writeln!(
                out,
                "destination_watch_restarts_total{{resource=\"{}\"}} {}",
                resource.as_str(),
                stats.watch_restarts(resource)
            );
        }
        header(
            &mut out,
            "destination_index_objects",
            "gauge",
            "Objects in the destination index.",
        );
        for resource in Resource::ALL {
            let _ = writeln!(
                out,
                "destination_index_objects{{resource=\"{}\"}} {}",
                resource.as_str(),
                stats.objects(resource)
            );
        }
        header(
            &mut out,
            "destination_queries",
            "gauge",
            "Distinct destinations followed by at least one stream.",
        );
        let _ = writeln!(out, "destination_queries {}", stats.queries);
        header(
            &mut out,
            "destination_file_loads_total",
            "counter",
            "Changed reads of the discovery file, applied or rejected (file backend).",
        );
        for (result, applied) in [("applied", true), ("rejected", false)] {
            let _ = writeln!(
                out,
                "destination_file_loads_total{{result=\"{result}\"}} {}",
                self.file_loads(applied)
            );
        }
        header(
            &mut out,
            "identity_certify_total",
            "counter",
            "Certify calls of the identity service, by outcome.",
        );
        for (result, counter) in CERTIFY_RESULTS.iter().zip(&self.certify) {
            let _ = writeln!(
                out,
                "identity_certify_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "identity_token_review_errors_total",
            "counter",
            "Tokens the identity service could not review: the API server refused the controller (forbidden, unauthorized) or did not answer.",
        );
        for (reason, counter) in TOKEN_REVIEW_ERRORS.iter().zip(&self.token_review_errors) {
            let _ = writeln!(
                out,
                "identity_token_review_errors_total{{reason=\"{reason}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "destination_ready",
            "gauge",
            "1 once the index has synced.",
        );
        let _ = writeln!(out, "destination_ready {}", u8::from(index.is_ready()));

        if let Ok(families) = self.families.lock() {
            for family in families.iter() {
                family.render(&mut out);
            }
        }
        crate::process::render(&mut out);
        out
    }
}

/// Writes a metric's `# HELP` and `# TYPE` lines.
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}
