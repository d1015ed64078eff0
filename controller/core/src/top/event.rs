//! Tap events into the table: the one reading of a `TapEvent` (its join key, its
//! ends' names, how it ended) that `mesh top` and the metrics API's `/api/top` share.

use super::{peer_name, End, RequestInit, StreamKey, Top};
use mesh_api::tap::{
    tap_event::{
        http::{response_end, Event},
        EndpointMeta,
    },
    TapEvent,
};
use std::{net::SocketAddr, time::Duration};

impl Top {
    /// Puts one tap event into the table; an event that is not HTTP is ignored.
    pub fn record(&mut self, event: &TapEvent) {
        let Some(http) = event.http.as_ref().and_then(|h| h.event.as_ref()) else {
            return;
        };
        let key = stream_key(event, http);
        match http {
            Event::RequestInit(init) => self.request_init(
                key,
                RequestInit {
                    source: peer_name(pod(&event.source_meta), addr(&event.source)),
                    destination: peer_name(pod(&event.destination_meta), addr(&event.destination)),
                    method: init.method.clone(),
                    path: init.path.clone(),
                },
            ),
            Event::ResponseInit(init) => {
                let status = u16::try_from(init.http_status).unwrap_or(u16::MAX);
                self.response_init(&key, status);
            }
            Event::ResponseEnd(end) => {
                let how = match &end.end {
                    Some(response_end::End::GrpcStatusCode(code)) => End::Grpc(*code),
                    Some(response_end::End::Reset(_)) => End::Reset,
                    None => End::Complete,
                };
                let latency = end
                    .since_request_init
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or_default();
                self.response_end(&key, how, latency);
            }
        }
    }
}

/// The key that joins a request's events (Linkerd's: source, destination, stream id).
fn stream_key(event: &TapEvent, http: &Event) -> StreamKey {
    let id = match http {
        Event::RequestInit(e) => e.id,
        Event::ResponseInit(e) => e.id,
        Event::ResponseEnd(e) => e.id,
    }
    .unwrap_or_default();
    StreamKey {
        source: addr(&event.source),
        destination: addr(&event.destination),
        base: id.base,
        stream: id.stream,
    }
}

/// The `pod` label of one end of a request, if the event has it.
fn pod(meta: &Option<EndpointMeta>) -> Option<&str> {
    meta.as_ref()
        .and_then(|m| m.labels.get("pod"))
        .map(String::as_str)
}

fn addr(a: &Option<mesh_api::net::TcpAddress>) -> Option<SocketAddr> {
    a.as_ref().and_then(|a| SocketAddr::try_from(a).ok())
}
