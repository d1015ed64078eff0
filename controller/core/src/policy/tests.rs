use super::*;

/// The problems of a document, one `path: reason` per line.
fn problems(yaml: &str) -> Vec<String> {
    match parse_yaml(yaml) {
        Ok(r) => panic!("expected problems, got {r:?}"),
        Err(Problems(p)) => p.iter().map(|p| p.to_string()).collect(),
    }
}

fn valid(yaml: &str) -> Resource {
    parse_yaml(yaml).unwrap_or_else(|p| panic!("expected valid, got:\n{p}"))
}

const HEAD: &str = "apiVersion: policy.mesh.rs/v1alpha1\n";

#[test]
fn a_server_reads_with_its_defaults() {
    let r = valid(&format!(
        "{HEAD}kind: Server\nmetadata: {{name: web-http, namespace: shop, creationTimestamp: '2026-01-01T00:00:00Z'}}\n\
         spec:\n  podSelector:\n    matchLabels: {{app: web}}\n    matchExpressions:\n    - {{key: tier, operator: In, values: [a, b]}}\n  port: http\n"
    ));
    let Resource::Server(s) = r else { panic!() };
    assert_eq!(s.port, PortRef::Name("http".into()));
    assert_eq!(s.protocol, ProxyProtocol::Unknown);
    assert_eq!(s.access_policy, DefaultPolicy::Deny);
    assert_eq!(s.meta.created, "2026-01-01T00:00:00Z");
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert!(selects(
        &s.selector,
        &labels(&[("app", "web"), ("tier", "a")])
    ));
    assert!(!selects(
        &s.selector,
        &labels(&[("app", "web"), ("tier", "c")])
    ));
    assert!(!selects(&s.selector, &labels(&[("app", "web")])));

    let r = valid(&format!(
        "{HEAD}kind: Server\nmetadata: {{name: s}}\nspec: {{podSelector: {{}}, port: 8080, proxyProtocol: gRPC, accessPolicy: audit}}\n"
    ));
    let Resource::Server(s) = r else { panic!() };
    assert_eq!(
        (s.port, s.protocol, s.access_policy),
        (
            PortRef::Number(8080),
            ProxyProtocol::Grpc,
            DefaultPolicy::Audit
        )
    );
}

#[test]
fn a_bad_server_names_every_problem() {
    assert_eq!(
        problems(&format!(
            "{HEAD}kind: Server\nmetadata: {{name: Web}}\nspec:\n  podSelector:\n    matchExpressions:\n    - {{key: tier, operator: In}}\n    - {{key: 'a b', operator: Exists, values: [x]}}\n  port: 70000\n  accessPolicy: allow\n"
        )),
        [
            "metadata.name: \"Web\" is not a DNS-1123 subdomain (lowercase letters, digits, `-`, `.`)",
            "spec.podSelector.matchExpressions[0].values: required (at least one value) with operator In",
            "spec.podSelector.matchExpressions[1].key: \"a b\" is not a label key (`[prefix/]name`, the prefix a DNS subdomain, the name at most 63 letters, digits, `-`, `_`, `.`)",
            "spec.podSelector.matchExpressions[1].values: must be empty with operator Exists",
            "spec.port: 70000 is not a port: expected 1-65535 or a port name",
            "spec.accessPolicy: \"allow\" is not a default inbound policy: expected one of all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny, audit",
        ]
    );
    assert_eq!(
        problems(&format!("{HEAD}kind: Server\nmetadata: {{name: s}}\nspec: {{podSelector: {{}}, port: Http_1}}\n")),
        ["spec.port: \"Http_1\" is neither a port number nor a port name (1-15 lowercase letters, digits and `-`, with a letter)"]
    );
    // Decoding problems: every one, the first with its line.
    let p = problems(&format!(
        "{HEAD}kind: Server\nmetadata: {{name: s}}\nspec:\n  podSelector: {{}}\n  port: 80\n  proxyProtocol: http\n  portt: 1\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].starts_with("spec.proxyProtocol: unknown variant `http`"),
        "{p:?}"
    );
    assert!(p[0].contains("line 7"), "{p:?}");
    assert!(
        p[1].starts_with("spec.portt: unknown field `portt`"),
        "{p:?}"
    );
}

#[test]
fn a_document_of_another_kind_or_group_says_so() {
    assert_eq!(
        problems("apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nspec: {}\n"),
        ["apiVersion: expected \"policy.mesh.rs/v1alpha1\", found \"policy.linkerd.io/v1beta3\" (a Linkerd or Gateway API policy moves by changing its apiVersion)"]
    );
    assert_eq!(
        problems(&format!("{HEAD}kind: ServerAuthorization\nspec: {{}}\n")),
        ["kind: \"ServerAuthorization\" is not a policy kind: expected one of Server, AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication, HTTPRoute"]
    );
}

#[test]
fn an_authorization_policy_reads_its_target_and_sources() {
    let r = valid(&format!(
        "{HEAD}kind: AuthorizationPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  targetRef: {{kind: namespace, name: shop}}\n  requiredAuthenticationRefs:\n  - {{group: Policy.Mesh.RS, kind: meshtlsauthentication, name: web}}\n  - {{group: policy.mesh.rs, kind: NetworkAuthentication, name: lan, namespace: infra}}\n"
    ));
    let Resource::AuthorizationPolicy(p) = r else {
        panic!()
    };
    assert_eq!(p.target, Target::Namespace);
    assert_eq!(
        p.identity,
        Some(IdentitySource::MeshTls(NamedRef {
            namespace: None,
            name: "web".into()
        }))
    );
    assert_eq!(
        p.network,
        Some(NamedRef {
            namespace: Some("infra".into()),
            name: "lan".into()
        })
    );
    let r = valid(&format!(
        "{HEAD}kind: AuthorizationPolicy\nmetadata: {{name: p}}\nspec:\n  targetRef: {{group: policy.mesh.rs, kind: HTTPRoute, name: r}}\n  requiredAuthenticationRefs:\n  - {{kind: ServiceAccount, name: web}}\n"
    ));
    let Resource::AuthorizationPolicy(p) = r else {
        panic!()
    };
    assert_eq!(p.target, Target::Route("r".into()));
    assert!(matches!(
        p.identity,
        Some(IdentitySource::ServiceAccount(_))
    ));
}

#[test]
fn a_bad_authorization_policy_names_every_problem() {
    assert_eq!(
        problems(&format!(
            "{HEAD}kind: AuthorizationPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  targetRef: {{kind: Namespace, name: other}}\n  requiredAuthenticationRefs:\n  - {{group: policy.mesh.rs, kind: MeshTLSAuthentication, name: a}}\n  - {{kind: NetworkAuthentication, name: n}}\n  - {{kind: ServiceAccount, name: web}}\n  - {{group: policy.mesh.rs, kind: ServiceAccount, name: web}}\n  - {{group: apps, kind: Deployment, name: web}}\n  - {{group: policy.mesh.rs, kind: NetworkAuthentication, name: n1}}\n  - {{group: policy.mesh.rs, kind: NetworkAuthentication, name: n2}}\n"
        )),
        [
            "spec.targetRef.name: a Namespace target must be the policy's own namespace \"shop\", found \"other\"",
            "spec.requiredAuthenticationRefs[1].group: missing: an empty group means the core group, which has no NetworkAuthentication; write `group: policy.mesh.rs`",
            "spec.requiredAuthenticationRefs[2]: a second identity source (ServiceAccount): at most one MeshTLSAuthentication or ServiceAccount may be required (list the identities in one MeshTLSAuthentication)",
            "spec.requiredAuthenticationRefs[3].group: ServiceAccount is in the core group: leave group empty, found \"policy.mesh.rs\"",
            "spec.requiredAuthenticationRefs[4].kind: unsupported kind \"Deployment\": expected one of MeshTLSAuthentication (policy.mesh.rs), NetworkAuthentication (policy.mesh.rs), ServiceAccount (core group)",
            "spec.requiredAuthenticationRefs[6]: a second NetworkAuthentication: at most one may be required (list its networks in one)",
        ]
    );
    assert_eq!(
        problems(&format!(
            "{HEAD}kind: AuthorizationPolicy\nmetadata: {{name: p}}\nspec:\n  targetRef: {{kind: Server, name: s}}\n  requiredAuthenticationRefs: []\n"
        )),
        ["spec.targetRef.group: missing: an empty group means the core group, which has no Server; write `group: policy.mesh.rs`"]
    );
    assert_eq!(
        problems(&format!(
            "{HEAD}kind: AuthorizationPolicy\nmetadata: {{name: p}}\nspec:\n  targetRef: {{group: policy.mesh.rs, kind: Server, name: s}}\n"
        )),
        ["spec.requiredAuthenticationRefs: required: the authentications a client must meet (`[]` allows every client from everywhere)"]
    );
    assert_eq!(
        problems(&format!("{HEAD}kind: Server\nmetadata: {{name: s}}\nspec: {{}}\n")),
        [
            "spec.podSelector: required: the pods of this namespace the Server applies to (`{}` selects all)",
            "spec.port: required: a port number or a container port's name",
        ]
    );
}

#[test]
fn mesh_tls_identities_and_refs() {
    let r = valid(&format!(
        "{HEAD}kind: MeshTLSAuthentication\nmetadata: {{name: m}}\nspec:\n  identities: ['*', '*.shop.serviceaccount.identity.mesh.cluster.local', web.shop.serviceaccount.identity.mesh.cluster.local]\n"
    ));
    let Resource::MeshTlsAuthentication(m) = r else {
        panic!()
    };
    let mut tls = api::authentication::MeshTls::default();
    for id in &m.identities {
        id.add_to("shop", "cluster.local", &mut tls);
    }
    assert_eq!(
        tls.identities,
        ["web.shop.serviceaccount.identity.mesh.cluster.local"]
    );
    assert_eq!(
        tls.suffixes,
        ["", "shop.serviceaccount.identity.mesh.cluster.local"]
    );

    let r = valid(&format!(
        "{HEAD}kind: MeshTLSAuthentication\nmetadata: {{name: m}}\nspec:\n  identityRefs:\n  - {{kind: ServiceAccount, name: web}}\n  - {{kind: ServiceAccount, name: api, namespace: other}}\n  - {{kind: Namespace, name: ops}}\n"
    ));
    let Resource::MeshTlsAuthentication(m) = r else {
        panic!()
    };
    let mut tls = api::authentication::MeshTls::default();
    for id in &m.identities {
        id.add_to("shop", "td", &mut tls);
    }
    assert_eq!(
        tls.identities,
        [
            "web.shop.serviceaccount.identity.mesh.td",
            "api.other.serviceaccount.identity.mesh.td"
        ]
    );
    assert_eq!(tls.suffixes, ["ops.serviceaccount.identity.mesh.td"]);
}

#[test]
fn bad_mesh_tls_names_every_problem() {
    assert_eq!(
        problems(&format!(
            "{HEAD}kind: MeshTLSAuthentication\nmetadata: {{name: m}}\nspec:\n  identities: ['foo.*.bar', '*.', 'a b', '10.0.0.1']\n"
        )),
        [
            "spec.identities[0]: \"foo.*.bar\": only a leading `*.` is a wildcard (`*` alone for any identity, `*.<suffix>`)",
            "spec.identities[1]: \"*.\": after `*.` must come a DNS name, the suffix identities must end with",
            "spec.identities[2]: \"a b\" is not an identity: expected `<sa>.<ns>.serviceaccount.identity.mesh.<trust-domain>`, `*` or `*.<suffix>`",
            "spec.identities[3]: \"10.0.0.1\" is not an identity: expected `<sa>.<ns>.serviceaccount.identity.mesh.<trust-domain>`, `*` or `*.<suffix>`",
        ]
    );
    assert_eq!(
        problems(&format!(
            "{HEAD}kind: MeshTLSAuthentication\nmetadata: {{name: m}}\nspec:\n  identities: ['*']\n  identityRefs:\n  - {{kind: Namespace, name: ops, namespace: x}}\n  - {{kind: Pod, name: p}}\n"
        )),
        [
            "spec: set one of identities and identityRefs, not both",
            "spec.identityRefs[0].namespace: a Namespace reference has no namespace: name the namespace in `name`",
            "spec.identityRefs[1].kind: unsupported kind \"Pod\": expected one of ServiceAccount (core group), Namespace (core group)",
        ]
    );
    assert_eq!(
        problems(&format!(
            "{HEAD}kind: MeshTLSAuthentication\nmetadata: {{name: m}}\nspec: {{identities: []}}\n"
        )),
        ["spec.identities: at least one identity is required"]
    );
}

#[test]
fn networks_and_their_exceptions() {
    let r = valid(&format!(
        "{HEAD}kind: NetworkAuthentication\nmetadata: {{name: n}}\nspec:\n  networks:\n  - {{cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.3.4]}}\n  - cidr: 'fd00::/8'\n  - cidr: 192.168.1.1\n"
    ));
    let Resource::NetworkAuthentication(n) = r else {
        panic!()
    };
    assert_eq!(n.networks.len(), 3);
    assert_eq!(n.networks[0].except[1].to_string(), "10.2.3.4/32");
    assert_eq!(n.networks[2].net.to_string(), "192.168.1.1/32");
    assert!(n.networks[0].net.contains("10.9.9.9".parse().unwrap()));
    assert!(!n.networks[0].net.contains("11.0.0.1".parse().unwrap()));
    assert!(!n.networks[0].net.contains("::1".parse().unwrap()));
    assert!(n.networks[1].net.contains("fd12::1".parse().unwrap()));

    assert_eq!(
        problems(&format!(
            "{HEAD}kind: NetworkAuthentication\nmetadata: {{name: n}}\nspec:\n  networks:\n  - {{cidr: 10.0.0.0/8, except: [11.0.0.0/8, 10.0.0.0/8, 10.0.0.0/7, nope]}}\n  - {{cidr: 10.0.0.1/8}}\n  - {{cidr: 10.0.0.0/33}}\n"
        )),
        [
            "spec.networks[0].except[0]: 11.0.0.0/8 is not inside cidr 10.0.0.0/8",
            "spec.networks[0].except[1]: 10.0.0.0/8 covers all of cidr 10.0.0.0/8, which then includes nothing",
            "spec.networks[0].except[2]: 10.0.0.0/7 is not inside cidr 10.0.0.0/8",
            "spec.networks[0].except[3]: \"nope\" is not a network: expected an IP address, or one and a prefix length (`10.0.0.0/8`, `fd00::/8`)",
            "spec.networks[1].cidr: \"10.0.0.1/8\" has address bits set past its prefix length: write the network's first address",
            "spec.networks[2].cidr: \"10.0.0.0/33\": the prefix length must be 0-32 for this address",
        ]
    );
    assert_eq!(
        problems(&format!(
            "{HEAD}kind: NetworkAuthentication\nmetadata: {{name: n}}\nspec: {{networks: []}}\n"
        )),
        ["spec.networks: at least one network is required"]
    );
}

#[test]
fn an_http_route_becomes_its_matches() {
    let r = valid(&format!(
        "{HEAD}kind: HTTPRoute\nmetadata: {{name: r, namespace: shop}}\nspec:\n  parentRefs: [{{name: web-http}}]\n  hostnames: [Web.Example]\n  rules:\n  - matches:\n    - path: {{value: /api}}\n      method: GET\n      headers: [{{name: X-Env, value: prod}}]\n    - path: {{type: RegularExpression, value: '/users/[0-9]+'}}\n  - {{}}\n"
    ));
    let Resource::HttpRoute(route) = r else {
        panic!()
    };
    use api::path_match::Kind as P;
    assert_eq!(route.parents, ["web-http"]);
    assert_eq!(route.hostnames, ["web.example"]);
    assert_eq!(route.matches.len(), 3);
    assert_eq!(
        route.matches[0].path.as_ref().unwrap().kind,
        Some(P::Prefix("/api".into()))
    );
    assert_eq!(route.matches[0].method, "GET");
    assert_eq!(route.matches[0].headers[0].name, "x-env");
    assert_eq!(
        route.matches[1].path.as_ref().unwrap().kind,
        Some(P::Regex("/users/[0-9]+".into()))
    );
    assert_eq!(
        route.matches[2],
        api::HttpMatch::default(),
        "a rule without matches matches all"
    );
}

#[test]
fn a_bad_http_route_names_every_problem() {
    let p = problems(&format!(
        "{HEAD}kind: HTTPRoute\nmetadata: {{name: r, namespace: shop}}\nspec:\n  parentRefs:\n  - {{group: gateway.networking.k8s.io, kind: Gateway, name: g}}\n  - {{name: s, namespace: other, port: 80}}\n  hostnames: ['1.2.3.4']\n  rules:\n  - matches:\n    - path: {{type: Exact, value: api}}\n      method: get\n      headers: [{{name: 'a b', value: x}}, {{type: RegularExpression, name: x, value: '(' }}]\n    - path: {{type: RegularExpression, value: '['}}\n"
    ));
    assert_eq!(p[..5], [
        "spec.parentRefs[0].kind: unsupported kind \"Gateway\": expected one of Server (policy.mesh.rs)",
        "spec.parentRefs[1].namespace: a route's Server must be in the route's namespace \"shop\", found \"other\"",
        "spec.parentRefs[1].port: not supported on a Server parent (the Server names its port)",
        "spec.hostnames[0]: \"1.2.3.4\" is not a hostname (a DNS name, or `*.` and one; no IP address, no port)",
        "spec.rules[0].matches[0].path.value: \"api\" does not start with `/`",
    ], "{p:#?}");
    assert_eq!(p[5], "spec.rules[0].matches[0].method: \"get\" is not one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH");
    assert_eq!(
        p[6],
        "spec.rules[0].matches[0].headers[0].name: \"a b\" is not a header name"
    );
    assert!(
        p[7].starts_with("spec.rules[0].matches[0].headers[1].value: "),
        "{p:#?}"
    );
    assert!(
        p[8].starts_with("spec.rules[0].matches[1].path.value: "),
        "{p:#?}"
    );
    assert_eq!(p.len(), 9, "{p:#?}");
}

#[test]
fn json_objects_validate_alike() {
    let object = serde_json::json!({
        "apiVersion": API_VERSION, "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "shop", "uid": "x", "managedFields": []},
        "spec": {"targetRef": {"kind": "Server", "name": "s"}, "requiredAuthenticationRefs": [{"kind": "Foo", "name": "x"}], "extra": 1},
    });
    let Err(Problems(p)) = validate_value(object) else {
        panic!()
    };
    let p: Vec<String> = p.iter().map(|p| p.to_string()).collect();
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(
        p[0].starts_with("spec.extra: unknown field `extra`"),
        "{p:#?}"
    );
    assert_eq!(p[1], "spec.targetRef.group: missing: an empty group means the core group, which has no Server; write `group: policy.mesh.rs`");
    assert!(
        p[2].starts_with("spec.requiredAuthenticationRefs[0].kind: unsupported kind \"Foo\""),
        "{p:#?}"
    );
}

#[test]
fn default_policies_parse_by_name() {
    for p in DefaultPolicy::ALL {
        assert_eq!(p.name().parse::<DefaultPolicy>(), Ok(p));
    }
    assert_eq!(DefaultPolicy::default(), DefaultPolicy::AllUnauthenticated);
    assert_eq!(parse_networks(DEFAULT_CLUSTER_NETWORKS).unwrap().len(), 5);
}
