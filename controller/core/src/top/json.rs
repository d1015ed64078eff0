//! Tap events as mesh shows them, the one reading `mesh tap` (its lines and `-o json`)
//! and the dashboard's tap stream (`/api/stream/tap`) share: the parts every line starts
//! with ([`common`]), the inbound policy's decision ([`authz`]), durations, gRPC status
//! names, and an event as JSON ([`to_json`]).

use mesh_api::tap::{
    tap_event::{http::Event, ProxyDirection},
    Header, TapEvent,
};
use std::{net::SocketAddr, time::Duration};

/// The parts every line of an event starts with.
pub struct Common {
    pub id: String,
    pub proxy: &'static str,
    pub src: String,
    pub dst: String,
    pub tls: bool,
}

pub fn common(event: &TapEvent, http: &Event) -> Common {
    let id = match http {
        Event::RequestInit(e) => e.id,
        Event::ResponseInit(e) => e.id,
        Event::ResponseEnd(e) => e.id,
    };
    let addr = |a: &Option<mesh_api::net::TcpAddress>| {
        a.as_ref()
            .and_then(|a| SocketAddr::try_from(a).ok())
            .map_or_else(|| "-".to_string(), |a| a.to_string())
    };
    Common {
        id: id.map_or_else(|| "-".into(), |id| format!("{}:{}", id.base, id.stream)),
        proxy: match event.proxy_direction() {
            ProxyDirection::Inbound => "in",
            ProxyDirection::Outbound => "out",
            ProxyDirection::Unknown => "-",
        },
        src: addr(&event.source),
        dst: addr(&event.destination),
        tls: event.tls,
    }
}

/// The inbound policy's decision of a request as `mesh tap` shows it (`authz=...` on a
/// request line): the authorization that allowed it (`authorizationpolicy/web-only`,
/// `default/all-unauthenticated`), else `DENIED`, `AUDIT` (let through only because the
/// policy audits) or `NOT_FOUND` (no route of the server), with the server that decided
/// (`srv=server/voting-http`). `None` without a decision (outbound, or policy off).
pub fn authz(event: &TapEvent) -> Option<String> {
    let a = event.authorization.as_ref()?;
    let name = |m: &Option<mesh_api::policy::Meta>| {
        m.as_ref()
            .map_or_else(|| "-".to_string(), |m| format!("{}/{}", m.kind, m.name))
    };
    Some(match a.outcome.as_str() {
        "allow" => name(&a.authz),
        "deny" => format!("DENIED srv={}", name(&a.server)),
        "audit" => format!("AUDIT srv={}", name(&a.server)),
        "route_not_found" => format!("NOT_FOUND srv={}", name(&a.server)),
        other => format!("{other} srv={}", name(&a.server)),
    })
}

/// The decision as JSON: `{outcome, server, route, authz, summary}`, each object
/// `kind/name` (`null` when absent), `summary` the words of `mesh tap`'s `authz=`
/// ([`authz`]), which the dashboard shows as they are; `null` without a decision.
fn authorization(event: &TapEvent) -> serde_json::Value {
    let Some(a) = event.authorization.as_ref() else {
        return serde_json::Value::Null;
    };
    let name =
        |m: &Option<mesh_api::policy::Meta>| m.as_ref().map(|m| format!("{}/{}", m.kind, m.name));
    serde_json::json!({
        "outcome": a.outcome,
        "server": name(&a.server),
        "route": name(&a.route),
        "authz": name(&a.authz),
        "summary": authz(event),
    })
}

/// An event's duration; zero when absent or negative (a proxy's clock never goes
/// back, so that is a peer's mistake, not a latency).
pub fn duration<D: Copy>(d: &Option<D>) -> Duration
where
    Duration: TryFrom<D>,
{
    d.as_ref()
        .and_then(|d| Duration::try_from(*d).ok())
        .unwrap_or_default()
}

/// An event's duration in microseconds.
pub fn micros<D: Copy>(d: &Option<D>) -> u128
where
    Duration: TryFrom<D>,
{
    duration(d).as_micros()
}

/// gRPC status codes by name, as Linkerd prints them.
pub fn grpc_status(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("Code({code})"), |n| n.to_string())
}

/// Headers as `[{name, value}]`, values read as UTF-8 (lossily).
fn headers(headers: &[Header]) -> serde_json::Value {
    headers
        .iter()
        .map(|h| {
            serde_json::json!({
                "name": h.name,
                "value": String::from_utf8_lossy(&h.value),
            })
        })
        .collect()
}

/// One event as a JSON object (`null` for an event with no HTTP part): what
/// `mesh tap -o json` prints a line of, and the dashboard's tap stream sends. Each
/// end's identity is the peer proxy's verified mesh identity as the tapped proxy saw
/// it (inbound the source's, outbound the destination's); empty when unknown.
pub fn to_json(event: &TapEvent) -> serde_json::Value {
    let Some(http) = event.http.as_ref().and_then(|h| h.event.as_ref()) else {
        return serde_json::Value::Null;
    };
    let c = common(event, http);
    let labels = |meta: Option<&std::collections::HashMap<String, String>>| {
        serde_json::to_value(meta.cloned().unwrap_or_default()).unwrap_or_default()
    };
    let mut doc = serde_json::json!({
        "id": c.id,
        "proxy": c.proxy,
        "source": c.src,
        "destination": c.dst,
        "tls": c.tls,
        "source_labels": labels(event.source_meta.as_ref().map(|m| &m.labels)),
        "destination_labels": labels(event.destination_meta.as_ref().map(|m| &m.labels)),
        "route_labels": labels(event.route_meta.as_ref().map(|m| &m.labels)),
        "source_identity": event.source_meta.as_ref().map_or("", |m| m.identity.as_str()),
        "destination_identity": event.destination_meta.as_ref().map_or("", |m| m.identity.as_str()),
        "authorization": authorization(event),
    });
    let fields = match http {
        Event::RequestInit(e) => serde_json::json!({
            "event": "req",
            "method": e.method,
            "scheme": e.scheme,
            "authority": e.authority,
            "path": e.path,
            "headers": headers(&e.headers),
        }),
        Event::ResponseInit(e) => serde_json::json!({
            "event": "rsp",
            "status": e.http_status,
            "latency_us": micros(&e.since_request_init),
            "headers": headers(&e.headers),
            "proxy_error": e.proxy_error,
        }),
        Event::ResponseEnd(e) => {
            use mesh_api::tap::tap_event::http::response_end::End;
            serde_json::json!({
                "event": "end",
                "duration_us": micros(&e.since_response_init),
                "latency_us": micros(&e.since_request_init),
                "response_bytes": e.response_bytes,
                "grpc_status": match &e.end { Some(End::GrpcStatusCode(c)) => Some(grpc_status(*c)), _ => None },
                "reset": match &e.end { Some(End::Reset(r)) => Some(r.clone()), _ => None },
                "trailers": headers(&e.trailers),
            })
        }
    };
    if let (Some(doc), serde_json::Value::Object(fields)) = (doc.as_object_mut(), fields) {
        doc.extend(fields);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::tap::tap_event::{self, http, EndpointMeta, ProxyDirection};

    /// An event names each end's labels and verified identity, and its headers as the
    /// proxy sent them (a redacted one stays `[redacted]`).
    #[test]
    fn an_event_names_its_ends_identities_and_headers() {
        let peer = "voting.demo.serviceaccount.identity.mesh.cluster.local";
        let mut event = TapEvent {
            source: Some("198.18.0.10:40312".parse::<SocketAddr>().unwrap().into()),
            source_meta: Some(EndpointMeta {
                labels: [("pod".to_string(), "web-0".to_string())].into(),
                identity: String::new(),
            }),
            destination: Some("198.18.0.20:8080".parse::<SocketAddr>().unwrap().into()),
            destination_meta: Some(EndpointMeta {
                labels: Default::default(),
                identity: peer.to_string(),
            }),
            tls: true,
            http: Some(tap_event::Http {
                event: Some(Event::RequestInit(http::RequestInit {
                    id: Some(http::StreamId { base: 7, stream: 3 }),
                    method: "GET".into(),
                    path: "/x".into(),
                    headers: vec![Header {
                        name: "authorization".into(),
                        value: b"[redacted]".to_vec(),
                    }],
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        event.set_proxy_direction(ProxyDirection::Outbound);
        let doc = to_json(&event);
        assert_eq!(doc["source_identity"], "");
        assert_eq!(doc["destination_identity"], peer);
        assert_eq!(doc["source_labels"]["pod"], "web-0");
        assert_eq!(doc["id"], "7:3");
        assert_eq!(
            doc["headers"],
            serde_json::json!([{ "name": "authorization", "value": "[redacted]" }])
        );
    }
}
