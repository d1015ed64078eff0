//! From resource events to compiled policy: every case through the index's own API,
//! the resources read by `policy::parse_yaml` as users write them.

use super::*;
use crate::policy::parse_yaml;
use api::authentication::{MeshTls, Permit};

const NS: &str = "shop";

fn config() -> Config {
    Config {
        trust_domain: "td".into(),
        ..Config::default()
    }
}

fn resource(yaml: &str) -> Resource {
    parse_yaml(&format!("apiVersion: policy.mesh.rs/v1alpha1\n{yaml}"))
        .unwrap_or_else(|p| panic!("{p}\n{yaml}"))
}

fn server(name: &str, created: &str, app: &str, port: &str, extra: &str) -> Resource {
    resource(&format!(
        "kind: Server\nmetadata: {{name: {name}, creationTimestamp: '{created}'}}\nspec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n  port: {port}\n{extra}"
    ))
}

fn pod(name: &str, app: &str) -> Pod {
    Pod {
        namespace: NS.into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        named_ports: BTreeMap::from([("http".to_string(), BTreeSet::from([8080]))]),
        ..Pod::default()
    }
}

fn index_with_pod() -> Index {
    let mut index = Index::new(config());
    index.apply_pod(pod("web-1", "web"));
    index
}

fn name(meta: &Option<api::Meta>) -> (String, String) {
    let m = meta.as_ref().expect("meta");
    (m.kind.clone(), m.name.clone())
}

fn authz_names(p: &api::InboundPolicy) -> Vec<String> {
    p.authorizations.iter().map(|a| name(&a.meta).1).collect()
}

fn route_names(p: &api::InboundPolicy) -> Vec<String> {
    p.http_routes.iter().map(|r| name(&r.meta).1).collect()
}

fn permit(a: &api::Authz) -> &Permit {
    a.authentication
        .as_ref()
        .and_then(|a| a.permit.as_ref())
        .expect("permit")
}

fn nets(a: &api::Authz) -> Vec<String> {
    a.networks
        .iter()
        .map(|n| {
            let net = n.net.as_ref().unwrap();
            let ip: std::net::IpAddr = net.ip.as_ref().unwrap().try_into().unwrap();
            format!("{ip}/{}", net.prefix_len)
        })
        .collect()
}

#[test]
fn every_default_policy_compiles_to_its_authorization() {
    let cluster: Vec<String> = super::super::parse_networks(super::super::DEFAULT_CLUSTER_NETWORKS)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    let all = ["0.0.0.0/0".to_string(), "::/0".to_string()];
    for policy in DefaultPolicy::ALL {
        // As the cluster's default, and as the pod's annotation over another default.
        for by_annotation in [false, true] {
            let mut config = config();
            let mut p = pod("web-1", "web");
            match by_annotation {
                true => {
                    config.default_policy = DefaultPolicy::Deny;
                    if policy == DefaultPolicy::Deny {
                        config.default_policy = DefaultPolicy::Audit;
                    }
                    p.default_policy = Some(policy.name().into());
                }
                false => config.default_policy = policy,
            }
            let mut index = Index::new(config);
            index.apply_pod(p);
            let got = index.watch(NS, "web-1", 8080).unwrap().borrow().clone();
            assert_eq!(name(&got.server), ("default".into(), policy.name().into()));
            assert!(got.http_routes.is_empty(), "no probes, no routes");
            let fallback = match policy {
                DefaultPolicy::Audit => api::Fallback::Audit,
                _ => api::Fallback::Deny,
            };
            assert_eq!(got.fallback, fallback as i32, "{policy}");
            let expected: Option<(Vec<String>, bool)> = match policy {
                DefaultPolicy::AllUnauthenticated => Some((all.to_vec(), false)),
                DefaultPolicy::AllAuthenticated => Some((all.to_vec(), true)),
                DefaultPolicy::ClusterUnauthenticated => Some((cluster.clone(), false)),
                DefaultPolicy::ClusterAuthenticated => Some((cluster.clone(), true)),
                DefaultPolicy::Deny | DefaultPolicy::Audit => None,
            };
            match expected {
                None => assert!(got.authorizations.is_empty(), "{policy}"),
                Some((networks, authenticated)) => {
                    assert_eq!(got.authorizations.len(), 1);
                    let a = &got.authorizations[0];
                    assert_eq!(name(&a.meta), ("default".into(), policy.name().into()));
                    assert_eq!(nets(a), networks, "{policy}");
                    match (permit(a), authenticated) {
                        (Permit::Unauthenticated(_), false) => {}
                        (Permit::MeshTls(m), true) => {
                            assert_eq!(m.suffixes, [""], "any identity");
                            assert!(m.identities.is_empty());
                        }
                        (p, _) => panic!("{policy}: {p:?}"),
                    }
                }
            }
        }
    }
}

#[test]
fn a_bad_annotation_falls_back_to_the_cluster_default_and_says_so() {
    let mut index = Index::new(Config {
        default_policy: DefaultPolicy::Deny,
        ..config()
    });
    let mut p = pod("web-1", "web");
    p.default_policy = Some("allow-all".into());
    index.apply_pod(p);
    let got = index.get(NS, "web-1", 80).unwrap();
    assert_eq!(name(&got.server).1, "deny");
    assert_eq!(
        index.diagnostics(NS).iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["Pod web-1: annotation config.mesh.rs/default-inbound-policy: \"allow-all\" is not a default inbound policy: expected one of all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny, audit; the cluster's default (deny) applies"]
    );
}

#[test]
fn probes_get_their_route_on_default_servers_and_route_less_servers() {
    let mut index = Index::new(Config {
        default_policy: DefaultPolicy::Deny,
        ..config()
    });
    let mut p = pod("web-1", "web");
    p.probes = BTreeMap::from([(8080, BTreeSet::from(["/live".into(), "/ready".into()]))]);
    p.opaque_ports = PortSet::from_ports([9000]);
    p.probes.insert(9000, BTreeSet::from(["/x".into()]));
    index.apply_pod(p);
    let rx = index.watch(NS, "web-1", 8080).unwrap();
    let got = rx.borrow().clone();
    assert_eq!(route_names(&got), ["probe", "default"]);
    let probe = &got.http_routes[0];
    assert_eq!(probe.matches.len(), 2);
    assert_eq!(probe.matches[0].method, "GET");
    assert_eq!(
        probe.matches[0].path.as_ref().unwrap().kind,
        Some(api::path_match::Kind::Exact("/live".into()))
    );
    assert_eq!(nets(&probe.authorizations[0]), ["0.0.0.0/0", "::/0"]);
    assert!(got.http_routes[1].matches.is_empty() && got.http_routes[1].authorizations.is_empty());

    // An opaque port: no routes, opaque protocol.
    let opaque = index.get(NS, "web-1", 9000).unwrap();
    assert!(opaque.http_routes.is_empty());
    assert!(matches!(
        opaque.protocol.unwrap().kind,
        Some(api::protocol::Kind::Opaque(_))
    ));

    // A Server without routes keeps the probe route; one with a route loses it.
    index.apply(
        NS,
        server("web-http", "2026-01-01T00:00:00Z", "web", "http", ""),
    );
    assert_eq!(route_names(&rx.borrow()), ["probe", "default"]);
    assert_eq!(
        name(&rx.borrow().server),
        ("server".into(), "web-http".into())
    );
    index.apply(NS, resource("kind: HTTPRoute\nmetadata: {name: api}\nspec:\n  parentRefs: [{name: web-http}]\n  rules: [{matches: [{path: {value: /api}}]}]\n"));
    assert_eq!(route_names(&rx.borrow()), ["api"]);

    // No probe networks: no probe routes.
    let mut index = Index::new(Config {
        probe_networks: vec![],
        ..config()
    });
    let mut p = pod("web-1", "web");
    p.probes = BTreeMap::from([(8080, BTreeSet::from(["/live".into()]))]);
    index.apply_pod(p);
    assert!(index.get(NS, "web-1", 8080).unwrap().http_routes.is_empty());
    assert_eq!(probe_path(Some("live?full=1")), "/live");
    assert_eq!(probe_path(None), "/");
}

#[test]
fn the_oldest_server_wins_a_port_and_deleting_it_hands_the_port_on() {
    let mut index = index_with_pod();
    let rx = index.watch(NS, "web-1", 8080).unwrap();
    index.apply(
        NS,
        server(
            "b-new",
            "2026-02-01T00:00:00Z",
            "web",
            "8080",
            "  proxyProtocol: HTTP/2\n",
        ),
    );
    index.apply(
        NS,
        server(
            "z-old",
            "2026-01-01T00:00:00Z",
            "web",
            "http",
            "  proxyProtocol: HTTP/1\n",
        ),
    );
    index.apply(
        NS,
        server("a-new", "2026-02-01T00:00:00Z", "web", "8080", ""),
    );
    let got = rx.borrow().clone();
    assert_eq!(name(&got.server), ("server".into(), "z-old".into()));
    assert_eq!(got.server.as_ref().unwrap().group, GROUP);
    assert!(matches!(
        got.protocol.unwrap().kind,
        Some(api::protocol::Kind::Http1(_))
    ));
    assert!(
        got.authorizations.is_empty(),
        "accessPolicy deny: nothing allowed"
    );
    assert_eq!(got.fallback, api::Fallback::Deny as i32);

    index.delete(NS, Kind::Server, "z-old");
    assert_eq!(name(&rx.borrow().server).1, "a-new", "same age: by name");
    index.delete(NS, Kind::Server, "a-new");
    index.delete(NS, Kind::Server, "b-new");
    assert_eq!(
        name(&rx.borrow().server),
        ("default".into(), "all-unauthenticated".into()),
        "the default is back"
    );
}

#[test]
fn servers_select_by_label_and_named_ports_by_the_pods_own_numbers() {
    let mut index = index_with_pod();
    let mut other = pod("api-1", "api");
    other.named_ports = BTreeMap::from([("http".to_string(), BTreeSet::from([9090, 9091]))]);
    index.apply_pod(other);
    index.apply(
        NS,
        server("http", "2026-01-01T00:00:00Z", "web", "http", ""),
    );
    index.apply(
        NS,
        server("api-http", "2026-01-01T00:00:00Z", "api", "http", ""),
    );
    let server_of =
        |index: &Index, pod: &str, port| name(&index.get(NS, pod, port).unwrap().server).1;
    assert_eq!(server_of(&index, "web-1", 8080), "http");
    assert_eq!(server_of(&index, "web-1", 9090), "all-unauthenticated");
    assert_eq!(server_of(&index, "api-1", 9090), "api-http");
    assert_eq!(server_of(&index, "api-1", 9091), "api-http");
    assert_eq!(server_of(&index, "api-1", 8080), "all-unauthenticated");
}

#[test]
fn access_policies_add_their_authorization_after_the_explicit_ones() {
    let mut index = index_with_pod();
    index.apply(
        NS,
        server(
            "s",
            "2026-01-01T00:00:00Z",
            "web",
            "8080",
            "  accessPolicy: cluster-authenticated\n",
        ),
    );
    index.apply(NS, resource("kind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  targetRef: {group: policy.mesh.rs, kind: Server, name: s}\n  requiredAuthenticationRefs: []\n"));
    let got = index.get(NS, "web-1", 8080).unwrap();
    assert_eq!(authz_names(&got), ["p", "cluster-authenticated"]);
    assert_eq!(got.fallback, api::Fallback::Deny as i32);
    index.apply(
        NS,
        server(
            "s",
            "2026-01-01T00:00:00Z",
            "web",
            "8080",
            "  accessPolicy: audit\n",
        ),
    );
    let got = index.get(NS, "web-1", 8080).unwrap();
    assert_eq!(authz_names(&got), ["p"]);
    assert_eq!(got.fallback, api::Fallback::Audit as i32);
}

#[test]
fn policies_compile_their_authentications() {
    let mut index = index_with_pod();
    index.apply(NS, server("s", "2026-01-01T00:00:00Z", "web", "8080", ""));
    index.apply(NS, resource("kind: MeshTLSAuthentication\nmetadata: {name: web}\nspec:\n  identityRefs: [{kind: ServiceAccount, name: web}, {kind: Namespace, name: ops}]\n  \n"));
    index.apply("infra", resource("kind: NetworkAuthentication\nmetadata: {name: lan}\nspec:\n  networks: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]\n"));
    index.apply(NS, resource("kind: AuthorizationPolicy\nmetadata: {name: a-tls}\nspec:\n  targetRef: {group: policy.mesh.rs, kind: Server, name: s}\n  requiredAuthenticationRefs:\n  - {group: policy.mesh.rs, kind: MeshTLSAuthentication, name: web}\n  - {group: policy.mesh.rs, kind: NetworkAuthentication, name: lan, namespace: infra}\n"));
    index.apply(NS, resource("kind: AuthorizationPolicy\nmetadata: {name: b-sa}\nspec:\n  targetRef: {group: policy.mesh.rs, kind: Server, name: s}\n  requiredAuthenticationRefs: [{kind: ServiceAccount, name: api, namespace: other}]\n"));
    let got = index.get(NS, "web-1", 8080).unwrap();
    assert_eq!(authz_names(&got), ["a-tls", "b-sa"]);
    let a = &got.authorizations[0];
    assert_eq!(name(&a.meta).0, "authorizationpolicy");
    assert_eq!(nets(a), ["10.0.0.0/8"]);
    assert_eq!(a.networks[0].except.len(), 1);
    assert_eq!(
        permit(a),
        &Permit::MeshTls(MeshTls {
            identities: vec!["web.shop.serviceaccount.identity.mesh.td".into()],
            suffixes: vec!["ops.serviceaccount.identity.mesh.td".into()],
        })
    );
    let b = &got.authorizations[1];
    assert_eq!(nets(b), ["0.0.0.0/0", "::/0"]);
    assert_eq!(
        permit(b),
        &Permit::MeshTls(MeshTls {
            identities: vec!["api.other.serviceaccount.identity.mesh.td".into()],
            suffixes: vec![],
        })
    );
    assert!(
        index.diagnostics(NS).is_empty(),
        "{:?}",
        index.diagnostics(NS)
    );
}

#[test]
fn a_policy_with_a_missing_authentication_is_ignored_until_it_exists() {
    let mut index = index_with_pod();
    let rx = index.watch(NS, "web-1", 8080).unwrap();
    index.apply(NS, server("s", "2026-01-01T00:00:00Z", "web", "8080", ""));
    index.apply(NS, resource("kind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  targetRef: {group: policy.mesh.rs, kind: Server, name: s}\n  requiredAuthenticationRefs: [{group: policy.mesh.rs, kind: NetworkAuthentication, name: lan, namespace: infra}]\n"));
    assert!(rx.borrow().authorizations.is_empty(), "fail closed");
    assert_eq!(
        index.diagnostics(NS).iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["AuthorizationPolicy p: ignored (nothing it targets allows anyone through it): NetworkAuthentication infra/lan does not exist"]
    );
    // Created in its own namespace: the referring namespace is recompiled.
    index.apply("infra", resource("kind: NetworkAuthentication\nmetadata: {name: lan}\nspec:\n  networks: [{cidr: 10.0.0.0/8}]\n"));
    assert_eq!(authz_names(&rx.borrow()), ["p"]);
    assert!(index.diagnostics(NS).is_empty());
    index.delete("infra", Kind::NetworkAuthentication, "lan");
    assert!(rx.borrow().authorizations.is_empty());
    assert_eq!(index.diagnostics(NS).len(), 1);
}

#[test]
fn a_namespace_target_covers_its_servers_but_not_default_ports() {
    let mut index = index_with_pod();
    index.apply(NS, resource("kind: AuthorizationPolicy\nmetadata: {name: ns-wide}\nspec:\n  targetRef: {kind: Namespace, name: shop}\n  requiredAuthenticationRefs: []\n"));
    assert_eq!(
        index.diagnostics(NS).iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["AuthorizationPolicy ns-wide: targets namespace shop, which has no Server: a Namespace target applies to Servers only, not to ports under the default policy"]
    );
    index.apply(NS, server("s", "2026-01-01T00:00:00Z", "web", "8080", ""));
    assert_eq!(
        authz_names(&index.get(NS, "web-1", 8080).unwrap()),
        ["ns-wide"]
    );
    assert_eq!(
        authz_names(&index.get(NS, "web-1", 9000).unwrap()),
        ["all-unauthenticated"]
    );
    // Another namespace's policy applies to nothing here.
    index.apply("other", resource("kind: AuthorizationPolicy\nmetadata: {name: o}\nspec:\n  targetRef: {kind: Namespace, name: other}\n  requiredAuthenticationRefs: []\n"));
    assert_eq!(
        authz_names(&index.get(NS, "web-1", 8080).unwrap()),
        ["ns-wide"]
    );
}

#[test]
fn routes_carry_their_own_authorizations_in_age_order() {
    let mut index = index_with_pod();
    let rx = index.watch(NS, "web-1", 8080).unwrap();
    index.apply(NS, server("s", "2026-01-01T00:00:00Z", "web", "8080", ""));
    index.apply(NS, resource("kind: HTTPRoute\nmetadata: {name: b-new, creationTimestamp: '2026-03-01T00:00:00Z'}\nspec:\n  parentRefs: [{name: s}]\n  hostnames: [web.shop]\n"));
    index.apply(NS, resource("kind: HTTPRoute\nmetadata: {name: z-old, creationTimestamp: '2026-02-01T00:00:00Z'}\nspec:\n  parentRefs: [{name: s}]\n  rules: [{matches: [{path: {type: Exact, value: /healthz}, method: GET}]}]\n"));
    index.apply(NS, resource("kind: AuthorizationPolicy\nmetadata: {name: health}\nspec:\n  targetRef: {group: policy.mesh.rs, kind: HTTPRoute, name: z-old}\n  requiredAuthenticationRefs: []\n"));
    let got = rx.borrow().clone();
    assert_eq!(route_names(&got), ["z-old", "b-new"]);
    assert_eq!(name(&got.http_routes[0].meta).0, "httproute");
    assert_eq!(
        got.http_routes[0]
            .authorizations
            .iter()
            .map(|a| name(&a.meta).1)
            .collect::<Vec<_>>(),
        ["health"]
    );
    assert_eq!(got.http_routes[0].matches[0].method, "GET");
    assert!(got.http_routes[1].authorizations.is_empty());
    assert_eq!(got.http_routes[1].hostnames, ["web.shop"]);
    assert!(
        got.authorizations.is_empty(),
        "the route policy is not server-wide"
    );

    // A route naming a missing or opaque Server is reported.
    index.apply(
        NS,
        resource("kind: HTTPRoute\nmetadata: {name: lost}\nspec:\n  parentRefs: [{name: nope}]\n"),
    );
    assert_eq!(
        index
            .diagnostics(NS)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["HTTPRoute lost: names Server shop/nope, which does not exist"]
    );
    index.apply(
        NS,
        server(
            "s",
            "2026-01-01T00:00:00Z",
            "web",
            "8080",
            "  proxyProtocol: opaque\n",
        ),
    );
    assert!(
        rx.borrow().http_routes.is_empty(),
        "no HTTP routes on an opaque port"
    );
}

#[test]
fn updates_are_sent_only_when_the_compiled_policy_changes() {
    let mut index = index_with_pod();
    index.apply_pod(pod("api-1", "api"));
    let mut rx = index.watch(NS, "web-1", 8080).unwrap();
    rx.borrow_and_update();
    // Resources that do not touch this port: nothing sent.
    index.apply(NS, server("api", "2026-01-01T00:00:00Z", "api", "8080", ""));
    index.apply(
        "other",
        server("web", "2026-01-01T00:00:00Z", "web", "8080", ""),
    );
    index.apply_pod(pod("api-1", "api"));
    let mut relabelled = pod("web-1", "web");
    relabelled.labels.insert("version".into(), "2".into());
    index.apply_pod(relabelled);
    assert!(!rx.has_changed().unwrap(), "nothing changed for web-1:8080");
    // One that does: one update.
    index.apply(NS, server("web", "2026-01-01T00:00:00Z", "web", "8080", ""));
    assert!(rx.has_changed().unwrap());
    assert_eq!(name(&rx.borrow_and_update().server).1, "web");
    // The same again: nothing.
    index.apply(NS, server("web", "2026-01-01T00:00:00Z", "web", "8080", ""));
    assert!(!rx.has_changed().unwrap());
    // A second watch shares the channel and starts from the current value.
    let second = index.watch(NS, "web-1", 8080).unwrap();
    assert_eq!(name(&second.borrow().server).1, "web");
    assert_eq!(index.watched_ports(), 1);
}

#[test]
fn unknown_pods_are_refused_and_deleted_pods_end_their_streams() {
    let mut index = index_with_pod();
    assert_eq!(
        index.watch(NS, "nope", 80).unwrap_err().to_string(),
        "unknown pod shop/nope"
    );
    assert!(index.watch("elsewhere", "web-1", 80).is_err());
    let rx = index.watch(NS, "web-1", 8080).unwrap();
    index.delete_pod(NS, "web-1");
    assert!(
        rx.has_changed().is_err(),
        "the sender is gone: the stream ends"
    );
    assert!(index.watch(NS, "web-1", 8080).is_err());
}

#[test]
fn dropped_watches_free_their_port() {
    let mut index = index_with_pod();
    let rx = index.watch(NS, "web-1", 8080).unwrap();
    assert_eq!(index.watched_ports(), 1);
    drop(rx);
    index.apply(NS, server("web", "2026-01-01T00:00:00Z", "web", "8080", ""));
    assert_eq!(index.watched_ports(), 0);
}

#[test]
fn a_relist_replaces_a_kind_whole_and_sends_only_what_changed() {
    let mut index = index_with_pod();
    index.apply_pod(pod("api-1", "api"));
    index.apply(NS, server("web", "2026-01-01T00:00:00Z", "web", "8080", ""));
    index.apply(NS, server("api", "2026-01-01T00:00:00Z", "api", "8080", ""));
    let mut web = index.watch(NS, "web-1", 8080).unwrap();
    let mut api = index.watch(NS, "api-1", 8080).unwrap();
    web.borrow_and_update();
    api.borrow_and_update();
    // The re-list still has `web`, no longer `api` (deleted while the watch was down).
    index.reset(
        &[Kind::Server],
        vec![(
            NS.into(),
            server("web", "2026-01-01T00:00:00Z", "web", "8080", ""),
        )],
    );
    assert!(
        !web.has_changed().unwrap(),
        "web-1 keeps its Server: nothing sent"
    );
    assert!(api.has_changed().unwrap());
    assert_eq!(name(&api.borrow_and_update().server).0, "default");
    // Other kinds are untouched by a Server re-list.
    index.apply(NS, resource("kind: NetworkAuthentication\nmetadata: {name: all}\nspec: {networks: [{cidr: 0.0.0.0/0}]}"));
    index.reset(&[Kind::Server], vec![]);
    assert_eq!(name(&web.borrow_and_update().server).0, "default");

    // Pods: the re-list keeps web-1 (its stream goes on) and drops api-1 (its ends).
    index.reset_pods(vec![pod("web-1", "web")]);
    assert!(web.has_changed().is_ok());
    assert!(api.has_changed().is_err(), "api-1 is gone: its stream ends");
    assert_eq!(index.pods(), 1);
}
