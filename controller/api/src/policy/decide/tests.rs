use super::*;
use crate::policy::{Cidr, DefaultPolicy};
use api::authentication::{MeshTls, Permit};

const WEB: &str = "web.emojivoto.serviceaccount.identity.mesh.cluster.local";
const VOTE: &str = "voting.emojivoto.serviceaccount.identity.mesh.cluster.local";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(cidr: &str, except: &[&str]) -> api::Network {
    let r = |c: &str| {
        let (ip, len) = c.split_once('/').unwrap();
        api::IpNet {
            ip: Some(ip.parse::<IpAddr>().unwrap().into()),
            prefix_len: len.parse().unwrap(),
        }
    };
    api::Network {
        net: Some(r(cidr)),
        except: except.iter().map(|e| r(e)).collect(),
    }
}

fn meta(kind: &str, name: &str) -> Option<api::Meta> {
    Some(api::Meta {
        group: "policy.mesh.rs".into(),
        kind: kind.into(),
        name: name.into(),
    })
}

fn authz(name: &str, networks: Vec<api::Network>, permit: Permit) -> api::Authz {
    api::Authz {
        meta: meta("authorizationpolicy", name),
        networks,
        authentication: Some(api::Authentication {
            permit: Some(permit),
        }),
    }
}

fn mesh(identities: &[&str], suffixes: &[&str]) -> Permit {
    Permit::MeshTls(MeshTls {
        identities: identities.iter().map(|s| s.to_string()).collect(),
        suffixes: suffixes.iter().map(|s| s.to_string()).collect(),
    })
}

fn server(authorizations: Vec<api::Authz>, routes: Vec<api::HttpRoute>) -> api::InboundPolicy {
    api::InboundPolicy {
        server: meta("server", "voting"),
        protocol: None,
        authorizations,
        http_routes: routes,
        fallback: api::Fallback::Deny as i32,
    }
}

/// A client at `ip`; loopback is the pod itself (transparent mode).
fn c<'a>(ip_: &str, id: Option<&'a str>) -> Client<'a> {
    let ip = ip(ip_).to_canonical();
    Client {
        ip,
        id,
        local: ip.is_loopback(),
    }
}

fn allowed(v: Verdict<'_>) -> Option<&str> {
    match v {
        Verdict::Allow(m) => Some(&m.name),
        _ => None,
    }
}

#[test]
fn networks_with_exceptions_and_identities() {
    let p = Policy::from_proto(&server(
        vec![
            authz(
                "web-only",
                vec![net("198.18.0.0/15", &["198.18.9.0/24"])],
                mesh(&[WEB], &[]),
            ),
            authz(
                "ns",
                vec![net("::/0", &[]), net("0.0.0.0/0", &[])],
                mesh(
                    &[],
                    &["emojivoto.serviceaccount.identity.mesh.cluster.local"],
                ),
            ),
        ],
        vec![],
    ))
    .unwrap();
    assert_eq!(
        allowed(p.check_tcp(c("198.18.0.7", Some(WEB)))),
        Some("web-only")
    );
    // An excepted address falls to the next authorization, which any identity of
    // the namespace meets.
    assert_eq!(allowed(p.check_tcp(c("198.18.9.7", Some(WEB)))), Some("ns"));
    assert_eq!(
        allowed(p.check_tcp(c("198.18.0.7", Some(VOTE)))),
        Some("ns")
    );
    // A suffix is matched by whole labels.
    let other = "x.notemojivoto.serviceaccount.identity.mesh.cluster.local";
    assert!(matches!(
        p.check_tcp(c("198.18.0.7", Some(other))),
        Verdict::Deny
    ));
    // No identity: no mesh TLS authorization holds; loopback always does.
    assert!(matches!(p.check_tcp(c("198.18.0.7", None)), Verdict::Deny));
    assert_eq!(
        allowed(p.check_tcp(c("127.0.0.1", None))),
        Some("localhost")
    );
    // In explicit mode loopback is a client like any other.
    let remote = Client {
        ip: ip("127.0.0.1"),
        id: None,
        local: false,
    };
    assert!(matches!(p.check_tcp(remote), Verdict::Deny));
    // IPv4 clients seen through an IPv6 socket are compared as IPv4.
    assert_eq!(
        allowed(p.check_tcp(Client {
            ip: ip("::ffff:198.18.0.7"),
            id: Some(WEB),
            local: false
        })),
        Some("web-only")
    );
}

#[test]
fn routes_decide_first_match_with_their_own_authorizations_first() {
    let route = |name: &str, path: api::path_match::Kind, authzs| api::HttpRoute {
        meta: meta("httproute", name),
        matches: vec![api::HttpMatch {
            path: Some(api::PathMatch { kind: Some(path) }),
            method: String::new(),
            headers: vec![],
        }],
        authorizations: authzs,
        hostnames: vec![],
    };
    let everyone = || vec![net("0.0.0.0/0", &[])];
    let p = Policy::from_proto(&server(
        vec![authz("web", everyone(), mesh(&[WEB], &[]))],
        vec![
            route(
                "health",
                api::path_match::Kind::Exact("/healthz".into()),
                vec![authz(
                    "probe",
                    everyone(),
                    Permit::Unauthenticated(Default::default()),
                )],
            ),
            route("api", api::path_match::Kind::Prefix("/api/".into()), vec![]),
            route(
                "vote",
                api::path_match::Kind::Regex("/emojivoto\\.v1\\.VotingService/Vote.*".into()),
                vec![],
            ),
        ],
    ))
    .unwrap();
    let h = HeaderMap::new();
    let check = |path: &str, id| p.check_http(c("198.18.0.7", id), None, &Method::GET, path, &h);
    let d = check("/healthz", None);
    assert_eq!(&*d.route.unwrap().name, "health");
    assert_eq!(allowed(d.verdict), Some("probe"));
    let d = check("/api/v1", Some(WEB));
    assert_eq!(&*d.route.unwrap().name, "api");
    assert_eq!(allowed(d.verdict), Some("web"));
    assert!(matches!(check("/api", None).verdict, Verdict::Deny));
    // By segments: `/apix` is not under `/api`.
    assert!(check("/apix", Some(WEB)).route.is_none());
    assert_eq!(
        &*check("/emojivoto.v1.VotingService/VoteDoughnut", Some(WEB))
            .route
            .unwrap()
            .name,
        "vote"
    );
    // No route matches: not found, whoever asks.
    assert!(check("/other", Some(WEB)).route.is_none());
}

#[test]
fn method_and_header_matches() {
    let p = Policy::from_proto(&server(
        vec![authz(
            "all",
            vec![net("0.0.0.0/0", &[])],
            Permit::Unauthenticated(Default::default()),
        )],
        vec![api::HttpRoute {
            meta: meta("httproute", "post-json"),
            matches: vec![api::HttpMatch {
                path: None,
                method: "POST".into(),
                headers: vec![api::HeaderMatch {
                    name: "content-type".into(),
                    value: Some(api::header_match::Value::Regex("application/json.*".into())),
                }],
            }],
            authorizations: vec![],
            hostnames: vec![],
        }],
    ))
    .unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    let cl = c("198.18.0.7", None);
    assert!(p
        .check_http(cl, None, &Method::POST, "/x", &h)
        .route
        .is_some());
    assert!(p
        .check_http(cl, None, &Method::GET, "/x", &h)
        .route
        .is_none());
    assert!(p
        .check_http(cl, None, &Method::POST, "/x", &HeaderMap::new())
        .route
        .is_none());
}

/// A route with `hostnames` is for those hosts only (port and case aside, `*.` for a
/// suffix); a request for another host, or with none, does not match it.
#[test]
fn routes_with_hostnames_match_those_hosts_only() {
    let p = Policy::from_proto(&server(
        vec![],
        vec![api::HttpRoute {
            meta: meta("httproute", "shop"),
            matches: vec![],
            authorizations: vec![authz(
                "anyone",
                vec![net("0.0.0.0/0", &[])],
                Permit::Unauthenticated(Default::default()),
            )],
            hostnames: vec!["shop.example.com".into(), "*.Shop.Test".into()],
        }],
    ))
    .unwrap();
    let h = HeaderMap::new();
    let cl = c("198.18.0.7", None);
    let route = |host: Option<&str>| {
        p.check_http(cl, host, &Method::GET, "/", &h)
            .route
            .is_some()
    };
    assert!(route(Some("shop.example.com")));
    assert!(route(Some("a.shop.test")));
    assert!(route(Some("a.b.shop.test")));
    assert!(
        !route(Some("shop.test")),
        "the wildcard needs a label before it"
    );
    assert!(!route(Some("evil.example.com")));
    assert!(!route(None));
    let req = |uri: &str, host: &str| {
        http::Request::get(uri)
            .header(http::header::HOST, host)
            .body(())
            .unwrap()
    };
    assert_eq!(
        super::request_host(&req("/", "Shop.Example.COM.:8080")).as_deref(),
        Some("shop.example.com")
    );
    assert_eq!(
        super::request_host(&req("http://a.shop.test/x", "ignored")).as_deref(),
        Some("a.shop.test")
    );
    let mut bad = server(vec![], vec![]);
    bad.http_routes = vec![api::HttpRoute {
        hostnames: vec!["*".into()],
        ..Default::default()
    }];
    let e = Policy::from_proto(&bad).unwrap_err();
    assert_eq!(e.field, "http_routes[0].hostnames[0]");
}

#[test]
fn malformed_policies_are_refused_with_the_field() {
    let mut no_networks = server(
        vec![authz(
            "x",
            vec![],
            Permit::Unauthenticated(Default::default()),
        )],
        vec![],
    );
    let e = Policy::from_proto(&no_networks).unwrap_err();
    assert_eq!(e.field, "authorizations[0].networks");
    no_networks.authorizations[0].networks = vec![net("10.0.0.0/33", &[])];
    let e = Policy::from_proto(&no_networks).unwrap_err();
    assert_eq!(e.field, "authorizations[0].networks[0].net.prefix_len");
    let bad_regex = server(
        vec![],
        vec![api::HttpRoute {
            meta: meta("httproute", "r"),
            matches: vec![api::HttpMatch {
                path: Some(api::PathMatch {
                    kind: Some(api::path_match::Kind::Regex("a)|(b".into())),
                }),
                ..Default::default()
            }],
            authorizations: vec![],
            hostnames: vec![],
        }],
    );
    let e = Policy::from_proto(&bad_regex).unwrap_err();
    assert_eq!(e.field, "http_routes[0].matches[0].path.regex");
    assert!(e.to_string().contains("not a valid regex"), "{e}");
}

#[test]
fn default_policies_mean_what_their_names_say() {
    let cluster = vec!["198.18.0.0/15".parse::<Cidr>().unwrap()];
    let compile = |name: &str| {
        let default: DefaultPolicy = name.parse().unwrap();
        Policy::from_proto(&default.inbound_policy(&cluster)).unwrap()
    };
    let inside = ip("198.18.0.7");
    let outside = ip("203.0.113.9");
    let ok = |p: &Policy, cl: IpAddr, id| {
        matches!(
            p.check_tcp(Client {
                ip: cl,
                id,
                local: false
            }),
            Verdict::Allow(_)
        )
    };
    let p = compile("all-unauthenticated");
    assert!(ok(&p, outside, None) && ok(&p, ip("2001:db8::1"), None));
    assert_eq!(
        allowed(p.check_tcp(c("203.0.113.9", None))),
        Some("all-unauthenticated")
    );
    assert_eq!(&*p.server.kind, "default");
    let p = compile("all-authenticated");
    assert!(ok(&p, outside, Some(WEB)) && !ok(&p, inside, None));
    let p = compile("cluster-authenticated");
    assert!(ok(&p, inside, Some(WEB)) && !ok(&p, outside, Some(WEB)) && !ok(&p, inside, None));
    let p = compile("cluster-unauthenticated");
    assert!(ok(&p, inside, None) && !ok(&p, outside, None));
    let p = compile("deny");
    assert!(!ok(&p, inside, Some(WEB)));
    assert_eq!(
        allowed(p.check_tcp(c("127.0.0.1", None))),
        Some("localhost")
    );
    let p = compile("audit");
    assert!(matches!(
        p.check_tcp(c("203.0.113.9", None)),
        Verdict::Audit
    ));
    assert!("allow".parse::<DefaultPolicy>().is_err());
}

/// Networks as the API sends them (`Cidr`, `mesh_api`'s one reader) become the ranges
/// the decision compares addresses with.
#[test]
fn ranges_contain_their_network() {
    let range = |c: &str| {
        let c: Cidr = c.parse().unwrap();
        IpRange::from_proto(c.network().net.as_ref(), "net").unwrap()
    };
    let r = range("10.1.0.0/16");
    assert!(r.contains(ip_bits(ip("10.1.255.3"))) && !r.contains(ip_bits(ip("10.2.0.0"))));
    let all4 = range("0.0.0.0/0");
    assert!(!all4.contains(ip_bits(ip("2001:db8::1"))));
    assert!(all4.contains(ip_bits(ip("::ffff:10.0.0.1"))));
    let all6 = range("::/0");
    assert!(all6.contains(ip_bits(ip("2001:db8::1"))));
    assert!(range("192.168.1.1/32").contains(ip_bits(ip("192.168.1.1"))));
    assert!(!range("192.168.1.1/32").contains(ip_bits(ip("192.168.1.2"))));
    assert!(IpRange::new(ip("fd00::"), 129).is_err());
}

fn verdict_name(v: Verdict<'_>) -> String {
    match v {
        Verdict::Allow(m) => format!("allow {}", m.name),
        Verdict::Deny => "deny".into(),
        Verdict::Audit => "audit".into(),
    }
}

/// A policy with a route of its own authorization, a server-wide one by identity and
/// one by network with an exception.
fn explained_policy(fallback: api::Fallback) -> Policy {
    let mut p = server(
        vec![
            authz("web-only", vec![net("0.0.0.0/0", &[])], mesh(&[WEB], &[])),
            authz(
                "office",
                vec![net("10.0.0.0/8", &["10.1.0.0/16"])],
                Permit::Unauthenticated(Default::default()),
            ),
        ],
        vec![
            api::HttpRoute {
                meta: meta("httproute", "health"),
                matches: vec![api::HttpMatch {
                    path: Some(api::PathMatch {
                        kind: Some(api::path_match::Kind::Exact("/healthz".into())),
                    }),
                    method: "GET".into(),
                    headers: vec![],
                }],
                authorizations: vec![authz(
                    "probe",
                    vec![net("198.18.0.0/15", &[])],
                    Permit::Unauthenticated(Default::default()),
                )],
                hostnames: vec![],
            },
            api::HttpRoute {
                meta: meta("httproute", "api"),
                matches: vec![api::HttpMatch {
                    path: Some(api::PathMatch {
                        kind: Some(api::path_match::Kind::Prefix("/api".into())),
                    }),
                    ..Default::default()
                }],
                authorizations: vec![],
                hostnames: vec![],
            },
        ],
    );
    p.fallback = fallback as i32;
    Policy::from_proto(&p).unwrap()
}

/// The explanation reaches the verdict the decision does, whatever the request.
#[test]
fn explanations_agree_with_the_decision() {
    for fallback in [api::Fallback::Deny, api::Fallback::Audit] {
        let p = explained_policy(fallback);
        for client in [
            "198.18.0.7",
            "10.2.3.4",
            "10.1.0.9",
            "203.0.113.1",
            "127.0.0.1",
        ] {
            for id in [None, Some(WEB), Some(VOTE)] {
                for path in ["/healthz", "/api/x", "/apix", "/other"] {
                    for method in [Method::GET, Method::POST] {
                        let h = HeaderMap::new();
                        let d = p.check_http(c(client, id), None, &method, path, &h);
                        let e = p.explain_http(c(client, id), None, &method, path, &h);
                        let case = format!("{client} {id:?} {method} {path}");
                        assert_eq!(verdict_name(d.verdict), verdict_name(e.verdict), "{case}");
                        assert_eq!(d.route.map(|m| &m.name), e.route.map(|m| &m.name), "{case}");
                    }
                }
                let d = p.check_tcp(c(client, id));
                let e = p.explain_tcp(c(client, id));
                assert_eq!(verdict_name(d), verdict_name(e.verdict), "{client} {id:?}");
            }
        }
    }
}

#[test]
fn denials_say_why_each_authorization_did_not_match() {
    let p = explained_policy(api::Fallback::Deny);
    let h = HeaderMap::new();
    let e = p.explain_http(c("10.1.0.9", Some(VOTE)), None, &Method::GET, "/api/v1", &h);
    assert!(matches!(e.verdict, Verdict::Deny));
    assert_eq!(&*e.route.unwrap().name, "api");
    assert_eq!(e.routes_missed.len(), 1);
    assert_eq!(
        e.routes_missed[0].reason,
        "GET /api/v1 matches none of: GET /healthz"
    );
    let reasons: Vec<_> = e
        .tried
        .iter()
        .map(|t| {
            (
                t.meta.name.to_string(),
                t.network.clone().err(),
                t.authentication.clone().err(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (
                "web-only".into(),
                None,
                Some(format!("client identity `{VOTE}` is not one of [{WEB}]"))
            ),
            (
                "office".into(),
                Some("client 10.1.0.9 is in 10.1.0.0/16, excepted from 10.0.0.0/8".into()),
                None
            ),
        ]
    );
    // Not mesh TLS, and outside every network.
    let e = p.explain_tcp(c("203.0.113.1", None));
    assert_eq!(
        e.tried[0].authentication,
        Err("not mesh TLS: the client has no mesh identity".into())
    );
    assert_eq!(
        e.tried[1].network,
        Err("client 203.0.113.1 is not in 10.0.0.0/8".into())
    );
    // The route's authorization is tried first, and the search stops at a match.
    let e = p.explain_http(c("198.18.0.7", None), None, &Method::GET, "/healthz", &h);
    assert_eq!(verdict_name(e.verdict), "allow probe");
    assert_eq!(e.tried.len(), 1);
    assert_eq!(e.tried[0].route.map(|r| &*r.name), Some("health"));
    // No route matches: each route says why.
    let e = p.explain_http(c("198.18.0.7", Some(WEB)), None, &Method::GET, "/apix", &h);
    assert!(e.route.is_none() && e.tried.is_empty());
    assert_eq!(
        e.routes_missed[1].reason,
        "GET /apix matches none of: /api/*"
    );
    // Loopback in transparent mode is the pod itself.
    assert!(p.explain_tcp(c("127.0.0.1", None)).local);
}

#[test]
fn authorizations_and_routes_describe_themselves() {
    let p = explained_policy(api::Fallback::Deny);
    let words: Vec<_> = p.authorizations().iter().map(Authz::describe).collect();
    assert_eq!(
        words,
        vec![
            format!("mesh TLS: {WEB}"),
            "unauthenticated from 10.0.0.0/8 except 10.1.0.0/16".into()
        ]
    );
    assert_eq!(p.routes()[0].describe(), "GET /healthz");
    assert_eq!(p.routes()[1].describe(), "/api/*");
    let ns = Policy::from_proto(&server(
        vec![authz(
            "ns",
            vec![net("0.0.0.0/0", &[]), net("::/0", &[])],
            mesh(
                &[],
                &["emojivoto.serviceaccount.identity.mesh.cluster.local"],
            ),
        )],
        vec![],
    ))
    .unwrap();
    assert_eq!(
        ns.authorizations()[0].describe(),
        "any mesh identity in namespace emojivoto"
    );
    let open = Policy::from_proto(&DefaultPolicy::AllUnauthenticated.inbound_policy(&[])).unwrap();
    assert_eq!(
        open.authorizations()[0].describe(),
        "unauthenticated from 0.0.0.0/0, ::/0"
    );
    let any = Policy::from_proto(&DefaultPolicy::AllAuthenticated.inbound_policy(&[])).unwrap();
    assert_eq!(any.authorizations()[0].describe(), "any mesh identity");
}
