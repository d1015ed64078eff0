//! `mesh tap TYPE[/NAME]`: the live requests of a resource's pods, from the
//! controller's tap API (`mesh.tap.TapApi/TapByResource`), one line per event as
//! Linkerd's `tap` prints them, or one JSON object per event (`-o json`).
//!
//! The tap API is found with the controller's HTTP API ([`Api::locate`]: `--tap-addr`,
//! the running demo's, or a port-forward to the controller's pod). Against a cluster
//! the caller's bearer token (its kubeconfig's, when it has one) goes with the call,
//! and the controller asks Kubernetes whether its owner may tap the namespace.

use crate::api::{Api, ApiArgs};
use mesh_api::tap::{
    observe_request::Extract, tap_event::http::Event, HttpFilter, ResourceSelection,
    TapByResourceRequest, TapEvent,
};
use mesh_core::top::json::{authz, common, grpc_status, micros, to_json};
use std::fmt::Write as _;

/// The flags that say what to tap, shared by `mesh tap` and `mesh top`, so both read
/// a target and its filters alike.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// What to tap: `TYPE[/NAME]`, TYPE one of ns, deploy, sts, ds, po, svc.
    #[arg(value_name = "TYPE[/NAME]")]
    target: String,

    /// The target's namespace [default: the demo's, the kubeconfig context's in a
    /// cluster, else `default`].
    #[arg(short, long)]
    namespace: Option<String>,

    /// Only requests to this resource (`TYPE/NAME`).
    #[arg(long, value_name = "TYPE/NAME")]
    to: Option<String>,

    /// The namespace of `--to` [default: the target's].
    #[arg(long, value_name = "NAMESPACE")]
    to_namespace: Option<String>,

    /// Only requests with this method (`GET`, `POST`, ...).
    #[arg(long)]
    method: Option<String>,

    /// Only requests whose path starts with this.
    #[arg(long)]
    path: Option<String>,

    /// Only requests with this authority.
    #[arg(long)]
    authority: Option<String>,

    /// The most requests a second tapped over all the target's pods.
    #[arg(long, default_value_t = 100)]
    max_rps: u32,

    #[command(flatten)]
    api: ApiArgs,
}

/// Flags of `mesh tap`.
#[derive(Debug, clap::Args)]
pub struct TapArgs {
    #[command(flatten)]
    filter: FilterArgs,

    /// Output: one line per event (default), or `json`, one object per event.
    #[arg(short, long, value_name = "FORMAT")]
    output: Option<String>,
}

/// What to tap, validated: everything of the request but the namespace, which
/// defaults to the running demo's and so is known once the API is found.
#[derive(Debug)]
pub(crate) struct Filter {
    /// As the user wrote it, for titles.
    pub(crate) target: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    to: Option<ResourceSelection>,
    http: HttpFilter,
    max_rps: u32,
    api: ApiArgs,
}

/// `mesh tap`, validated.
#[derive(Debug)]
pub struct Config {
    filter: Filter,
    json: bool,
}

// === impl Config ===

impl TryFrom<TapArgs> for Config {
    type Error = crate::UsageError;

    fn try_from(args: TapArgs) -> Result<Self, Self::Error> {
        let json = match args.output.as_deref() {
            None | Some("") => false,
            Some("json") => true,
            Some(other) => {
                return Err(crate::UsageError::new(format!(
                    "-o {other:?}: expected `json` or nothing"
                )))
            }
        };
        Ok(Self {
            filter: Filter::try_from(args.filter)?,
            json,
        })
    }
}

/// Runs `mesh tap` until the stream ends or the user interrupts it.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let Config { filter, json } = config;
    let (_api, mut events) = filter.open(json).await?;
    loop {
        let next = tokio::select! {
            next = events.message() => next,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match next {
            Ok(Some(event)) => {
                let line = match json {
                    true => to_json(&event).to_string(),
                    false => line(&event),
                };
                if !line.is_empty() {
                    crate::out(&format!("{line}\n"));
                }
            }
            Ok(None) => return Ok(()),
            Err(status) => return Err(stream_failed(&status)),
        }
    }
}

/// A tap stream's error, as both commands say it.
pub(crate) fn stream_failed(status: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "the tap stream failed: {} ({:?})",
        status.message(),
        status.code()
    )
}

// === impl Filter ===

impl TryFrom<FilterArgs> for Filter {
    type Error = crate::UsageError;

    fn try_from(args: FilterArgs) -> Result<Self, Self::Error> {
        let (kind, name) = split(&args.target)?;
        let to = match &args.to {
            Some(to) => {
                let (kind, name) = split(to)?;
                if name.is_empty() {
                    return Err(crate::UsageError::new(format!(
                        "--to {to:?}: expected TYPE/NAME"
                    )));
                }
                Some(ResourceSelection {
                    namespace: args.to_namespace.clone().unwrap_or_default(),
                    kind,
                    name,
                    label_selector: String::new(),
                })
            }
            None => None,
        };
        if args.max_rps == 0 {
            return Err(crate::UsageError::new("--max-rps must be at least 1"));
        }
        Ok(Self {
            target: args.target,
            kind,
            name,
            namespace: args.namespace,
            to,
            http: HttpFilter {
                method: args.method,
                path_prefix: args.path,
                authority: args.authority,
            },
            max_rps: args.max_rps,
            api: args.api,
        })
    }
}

impl Filter {
    /// Finds the tap API and opens the stream; `headers` asks the proxies for
    /// requests' headers. The API is returned for what else it knows (the namespace
    /// the target was read in).
    pub(crate) async fn open(
        &self,
        headers: bool,
    ) -> anyhow::Result<(Api, tonic::Streaming<TapEvent>)> {
        let api = Api::locate(&self.api).await?;
        let namespace = self.namespace(&api).to_string();
        let events = api.tap(self.request(&namespace, headers)).await?;
        Ok((api, events))
    }

    /// The namespace the target is read in: `-n`, else the API's default.
    pub(crate) fn namespace<'a>(&'a self, api: &'a Api) -> &'a str {
        self.namespace
            .as_deref()
            .unwrap_or_else(|| api.default_namespace())
    }

    /// The request the flags describe, in `namespace`.
    /// Headers are asked for with `-o json` only, where they are printed (sensitive ones
    /// redacted by the proxies), as Linkerd's JSON output shows them.
    fn request(&self, namespace: &str, headers: bool) -> TapByResourceRequest {
        TapByResourceRequest {
            target: Some(ResourceSelection {
                namespace: namespace.to_string(),
                kind: self.kind.clone(),
                name: self.name.clone(),
                label_selector: String::new(),
            }),
            r#match: self.http.to_match(),
            max_rps: self.max_rps,
            extract: Some(Extract { headers }),
            to: self.to.clone(),
        }
    }
}

/// `TYPE[/NAME]` as (type, name or empty).
fn split(s: &str) -> Result<(String, String), crate::UsageError> {
    let (kind, name) = s.split_once('/').unwrap_or((s, ""));
    if kind.is_empty() || (s.contains('/') && name.is_empty()) {
        return Err(crate::UsageError::new(format!(
            "{s:?}: expected TYPE[/NAME]"
        )));
    }
    Ok((kind.to_string(), name.to_string()))
}

/// One event as Linkerd's tap prints it; empty for an event with no HTTP part.
fn line(event: &TapEvent) -> String {
    let Some(http) = event.http.as_ref().and_then(|h| h.event.as_ref()) else {
        return String::new();
    };
    let c = common(event, http);
    // Linkerd pads `in` to the width of `out`.
    let proxy = if c.proxy == "in" { "in " } else { c.proxy };
    let mut out = String::new();
    let head = |kind: &str| {
        format!(
            "{kind} id={} proxy={proxy} src={} dst={} tls={}",
            c.id, c.src, c.dst, c.tls
        )
    };
    match http {
        Event::RequestInit(e) => {
            let _ = write!(
                out,
                "{} :method={} :authority={} :path={}",
                head("req"),
                e.method,
                e.authority,
                e.path
            );
            // The inbound policy's decision, where there was one.
            if let Some(authz) = authz(event) {
                let _ = write!(out, " authz={authz}");
            }
        }
        Event::ResponseInit(e) => {
            let _ = write!(
                out,
                "{} :status={} latency={}µs",
                head("rsp"),
                e.http_status,
                micros(&e.since_request_init)
            );
            if !e.proxy_error.is_empty() {
                let _ = write!(out, " proxy-error={}", e.proxy_error);
            }
        }
        Event::ResponseEnd(e) => {
            out.push_str(&head("end"));
            use mesh_api::tap::tap_event::http::response_end::End;
            match &e.end {
                Some(End::GrpcStatusCode(code)) => {
                    let _ = write!(out, " grpc-status={}", grpc_status(*code));
                }
                Some(End::Reset(reason)) => {
                    let _ = write!(out, " reset-error={reason}");
                }
                None => {}
            }
            let _ = write!(
                out,
                " duration={}µs response-length={}B",
                micros(&e.since_response_init),
                e.response_bytes
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::tap::{
        observe_request::{r#match as m, Match},
        tap_event::{self, http, ProxyDirection},
    };
    use std::net::SocketAddr;

    fn event(direction: ProxyDirection, e: Event) -> TapEvent {
        let mut ev = TapEvent {
            source: Some("127.0.0.1:5000".parse::<SocketAddr>().unwrap().into()),
            destination: Some("127.0.0.1:7011".parse::<SocketAddr>().unwrap().into()),
            tls: true,
            http: Some(tap_event::Http { event: Some(e) }),
            ..Default::default()
        };
        ev.set_proxy_direction(direction);
        ev
    }

    fn id() -> Option<http::StreamId> {
        Some(http::StreamId { base: 7, stream: 3 })
    }

    #[test]
    fn lines_read_as_linkerds() {
        let req = event(
            ProxyDirection::Inbound,
            Event::RequestInit(http::RequestInit {
                id: id(),
                method: "GET".into(),
                scheme: "http".into(),
                authority: "web.demo.svc.cluster.local:80".into(),
                path: "/api/list".into(),
                headers: vec![],
            }),
        );
        assert_eq!(
            line(&req),
            "req id=7:3 proxy=in  src=127.0.0.1:5000 dst=127.0.0.1:7011 tls=true :method=GET :authority=web.demo.svc.cluster.local:80 :path=/api/list"
        );
        let rsp = event(
            ProxyDirection::Outbound,
            Event::ResponseInit(http::ResponseInit {
                id: id(),
                since_request_init: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 1_500_000,
                }),
                http_status: 200,
                ..Default::default()
            }),
        );
        assert_eq!(
            line(&rsp),
            "rsp id=7:3 proxy=out src=127.0.0.1:5000 dst=127.0.0.1:7011 tls=true :status=200 latency=1500µs"
        );
        let end = event(
            ProxyDirection::Outbound,
            Event::ResponseEnd(http::ResponseEnd {
                id: id(),
                since_response_init: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 20_000,
                }),
                response_bytes: 42,
                end: Some(http::response_end::End::GrpcStatusCode(0)),
                ..Default::default()
            }),
        );
        assert_eq!(
            line(&end),
            "end id=7:3 proxy=out src=127.0.0.1:5000 dst=127.0.0.1:7011 tls=true grpc-status=OK duration=20µs response-length=42B"
        );
        let json = to_json(&end);
        assert_eq!(json["event"], "end");
        assert_eq!(json["response_bytes"], 42);
        assert_eq!(json["grpc_status"], "OK");
    }

    /// An inbound request line ends with the policy's decision: the authorization
    /// that allowed it, or the denial with the server that decided; `-o json` carries
    /// the decision whole. Without one (outbound, policy off) nothing is added.
    #[test]
    fn request_lines_show_the_policys_decision() {
        use mesh_api::policy::Meta;
        let meta = |kind: &str, name: &str| Meta {
            group: "policy.mesh.rs".into(),
            kind: kind.into(),
            name: name.into(),
        };
        let req = |outcome: &str, authz: Option<Meta>| {
            let mut ev = event(
                ProxyDirection::Inbound,
                Event::RequestInit(http::RequestInit {
                    id: id(),
                    method: "GET".into(),
                    authority: "voting.demo.svc.cluster.local:80".into(),
                    path: "/leaderboard".into(),
                    ..Default::default()
                }),
            );
            ev.authorization = Some(tap_event::Authorization {
                outcome: outcome.into(),
                server: Some(meta("server", "voting-http")),
                route: None,
                authz,
            });
            ev
        };
        let head = "req id=7:3 proxy=in  src=127.0.0.1:5000 dst=127.0.0.1:7011 tls=true :method=GET :authority=voting.demo.svc.cluster.local:80 :path=/leaderboard";
        let denied = req("deny", None);
        assert_eq!(
            line(&denied),
            format!("{head} authz=DENIED srv=server/voting-http")
        );
        let allowed = req(
            "allow",
            Some(meta("authorizationpolicy", "voting-from-web")),
        );
        assert_eq!(
            line(&allowed),
            format!("{head} authz=authorizationpolicy/voting-from-web")
        );
        assert_eq!(
            line(&req("audit", None)),
            format!("{head} authz=AUDIT srv=server/voting-http")
        );
        let json = to_json(&denied);
        assert_eq!(
            json["authorization"],
            serde_json::json!({"outcome": "deny", "server": "server/voting-http", "route": null, "authz": null, "summary": "DENIED srv=server/voting-http"})
        );
        assert_eq!(
            to_json(&allowed)["authorization"]["authz"],
            "authorizationpolicy/voting-from-web"
        );
        // No decision: the line as Linkerd's, and `null`.
        let mut none = denied.clone();
        none.authorization = None;
        assert_eq!(line(&none), head);
        assert!(to_json(&none)["authorization"].is_null());
    }

    #[test]
    fn flags_become_the_request() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            tap: TapArgs,
        }
        let cli = Cli::parse_from([
            "tap",
            "deploy/web",
            "--to",
            "deploy/voting",
            "--method",
            "get",
            "--path",
            "/api",
        ]);
        let filter = Filter::try_from(cli.tap.filter).unwrap();
        let req = filter.request("demo", false);
        assert_eq!(req.extract, Some(Extract { headers: false }));
        let target = req.target.unwrap();
        assert_eq!(
            (
                target.kind.as_str(),
                target.name.as_str(),
                target.namespace.as_str()
            ),
            ("deploy", "web", "demo")
        );
        assert_eq!(req.to.unwrap().name, "voting");
        assert_eq!(req.max_rps, 100);
        let Some(Match {
            r#match: Some(m::Match::All(seq)),
        }) = req.r#match
        else {
            panic!("expected all");
        };
        assert_eq!(seq.matches.len(), 2);
        for bad in ["deploy/", "/web"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }
}
