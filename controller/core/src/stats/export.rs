//! The store's aggregates in Prometheus text, so an existing Prometheus can federate
//! them instead of scraping every proxy.
//!
//! Each tracked pod's reduced series are written under the proxy's own names
//! (`response_total`, `response_latency_ms_bucket`, `tcp_*`, `route_*`,
//! `inbound_{http,tcp}_authz_{deny,audit}_total`) with the labels
//! kept (`direction`, `classification`, `le`, `tls`, `server_id`, `authority`,
//! `dst_*`, `dst`, `rt_route`) and the labels a Prometheus scrape job would add to the
//! pod's own series (`namespace`, `pod`, and the owner, `deployment="web"`), so the
//! queries written for Linkerd's Prometheus work on them. Counters are the reset-corrected
//! totals since the controller began following the pod: they restart from zero when
//! the controller does, which Prometheus' functions read as a reset. (What the limits
//! leave out is the controller's own metric, on its admin server.)

use super::{
    resource::PodMeta,
    scrape::{Class, Layer, Measure, Side},
    Stats,
};
use std::fmt::Write as _;

/// The families, in the order they are written; each is written whole.
const FAMILIES: [(&str, &str); 13] = [
    ("response_total", "counter"),
    ("response_latency_ms", "histogram"),
    ("tcp_open_connections", "gauge"),
    ("tcp_open_total", "counter"),
    ("tcp_read_bytes_total", "counter"),
    ("tcp_write_bytes_total", "counter"),
    ("route_response_total", "counter"),
    ("route_response_latency_ms", "histogram"),
    ("route_actual_response_total", "counter"),
    ("inbound_http_authz_deny_total", "counter"),
    ("inbound_tcp_authz_deny_total", "counter"),
    ("inbound_http_authz_audit_total", "counter"),
    ("inbound_tcp_authz_audit_total", "counter"),
];

impl Stats {
    /// Every tracked pod's series, as of its last scrape.
    pub fn export(&self) -> String {
        let mut families: [String; FAMILIES.len()] = Default::default();
        for (meta, window) in self.pods() {
            let Some(window) = window else {
                continue;
            };
            for (key, value) in window.keys().iter().zip(window.current()) {
                let (family, suffix) = match (key.measure, &*key.side) {
                    (Measure::OpenConnections, _) => (2, ""),
                    (Measure::OpenedConnections, _) => (3, ""),
                    (Measure::ReadBytes, _) => (4, ""),
                    (Measure::WriteBytes, _) => (5, ""),
                    (Measure::Unauthorized(Layer::Http), _) => (9, ""),
                    (Measure::Unauthorized(Layer::Tcp), _) => (10, ""),
                    (Measure::Audited(Layer::Http), _) => (11, ""),
                    (Measure::Audited(Layer::Tcp), _) => (12, ""),
                    (Measure::Responses(_), Side::Route(_)) => (6, ""),
                    (Measure::LatencyBucket(_), Side::Route(_)) => (7, "_bucket"),
                    (Measure::Responses(_), Side::RouteActual(_)) => (8, ""),
                    // Not read from a page: attempts' latency is not kept.
                    (Measure::LatencyBucket(_), Side::RouteActual(_)) => continue,
                    (Measure::Responses(_), _) => (0, ""),
                    (Measure::LatencyBucket(_), _) => (1, "_bucket"),
                };
                let out = &mut families[family];
                let _ = write!(out, "{}{suffix}{{", FAMILIES[family].0);
                pod_labels(out, meta);
                side_labels(out, &key.side);
                match key.measure {
                    Measure::Responses(Class::Success) => label(out, "classification", "success"),
                    Measure::Responses(Class::Failure) => label(out, "classification", "failure"),
                    Measure::LatencyBucket(le) if le.value().is_infinite() => {
                        label(out, "le", "+Inf");
                    }
                    Measure::LatencyBucket(le) => label(out, "le", &le.value().to_string()),
                    Measure::OpenConnections
                    | Measure::OpenedConnections
                    | Measure::ReadBytes
                    | Measure::WriteBytes
                    | Measure::Unauthorized(_)
                    | Measure::Audited(_) => {}
                }
                out.pop();
                let _ = writeln!(out, "}} {value}");
            }
        }
        let mut text = String::new();
        for ((name, kind), samples) in FAMILIES.iter().zip(families) {
            if samples.is_empty() {
                continue;
            }
            let _ = writeln!(text, "# TYPE {name} {kind}");
            text.push_str(&samples);
        }
        text
    }
}

fn pod_labels(out: &mut String, meta: &PodMeta) {
    label(out, "namespace", &meta.namespace);
    label(out, "pod", &meta.name);
    if let Some((kind, name)) = &meta.owner {
        if is_label_name(kind) {
            label(out, kind, name);
        }
    }
}

fn side_labels(out: &mut String, side: &Side) {
    match side {
        Side::Inbound => label(out, "direction", "inbound"),
        Side::InboundFrom(client) => {
            label(out, "direction", "inbound");
            label(out, "tls", if client.is_some() { "true" } else { "false" });
            if let Some(id) = client {
                label(out, "client_id", id);
            }
        }
        Side::Outbound(d) => {
            label(out, "direction", "outbound");
            let pairs = [
                ("authority", d.authority.as_deref()),
                ("dst_namespace", d.namespace.as_deref()),
                ("dst_service", d.service.as_deref()),
                ("dst_pod", d.pod.as_deref()),
                ("server_id", d.server_id.as_deref()),
            ];
            for (name, value) in pairs {
                if let Some(v) = value {
                    label(out, name, v);
                }
            }
            if let Some((kind, name)) = &d.owner {
                label(out, &format!("dst_{kind}"), name);
            }
            label(out, "tls", if d.tls { "true" } else { "false" });
        }
        Side::Route(r) | Side::RouteActual(r) => {
            label(out, "direction", "outbound");
            label(out, "dst", &r.dst);
            if let Some(route) = &r.route {
                label(out, "rt_route", route);
            }
        }
    }
}

/// Writes `name="value",` with the value escaped as the format requires.
fn label(out: &mut String, name: &str, value: &str) {
    mesh_api::prom::write_label(out, name, value);
    out.push(',');
}

/// Owner kinds come from the index (Kubernetes kinds, lowercased); one that is not a
/// label name is left out rather than written invalid.
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
