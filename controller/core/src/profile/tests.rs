use super::*;
use mesh_api::destination::{request_match, response_match};

const CD: Option<&str> = Some("cluster.local");

/// A Linkerd profile, as its docs write one, with only `apiVersion` changed.
const LINKERD: &str = r#"
apiVersion: mesh.rs/v1alpha1
kind: ServiceProfile
metadata:
  name: web.emojivoto.svc.cluster.local
  namespace: emojivoto
  annotations: {owner: team-a}
spec:
  routes:
  - name: GET /api/list
    condition:
      method: GET
      pathRegex: /api/list
    isRetryable: true
    timeout: 250ms
    maxRetries: 3
  - name: POST /api/vote
    condition:
      all:
      - method: POST
      - pathRegex: /api/vote(/.*)?
    responseClasses:
    - condition:
        status:
          min: 500
          max: 599
      isFailure: true
    - condition:
        not:
          status: {min: 400}
      isFailure: false
  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
    ttl: 10s
  dstOverrides:
  - authority: web-v1.emojivoto.svc.cluster.local:80
    weight: 900m
  - authority: web-v2.emojivoto.svc.cluster.local:80
    weight: 100m
"#;

fn problems(yaml: &str) -> Vec<String> {
    match parse_yaml(yaml, CD) {
        Ok(v) => panic!("accepted: {v:?}"),
        Err(Problems(p)) => p.iter().map(ToString::to_string).collect(),
    }
}

/// A profile with one route whose spec is `route` (YAML, indented for the list).
fn with_route(route: &str) -> String {
    format!(
        "metadata: {{name: web.ns.svc.cluster.local}}\nspec:\n  routes:\n  - {}\n",
        route.trim().replace('\n', "\n    ")
    )
}

#[test]
fn a_linkerd_profile_converts() {
    let v = parse_yaml(LINKERD, CD).unwrap();
    assert_eq!(v.routes.len(), 2);
    let list = &v.routes[0];
    assert_eq!(list.name, "GET /api/list");
    assert_eq!(list.timeout_ms, 250);
    assert_eq!(list.max_retries, 3);
    assert!(list.is_retryable);
    assert_eq!(list.metrics_labels["route"], "GET /api/list");
    // Several fields at once: all must hold; the regex is anchored.
    let Some(request_match::Match::All(seq)) = &list.condition.as_ref().unwrap().r#match else {
        panic!("{:?}", list.condition)
    };
    assert_eq!(
        seq.matches[0].r#match,
        Some(request_match::Match::Method("GET".into()))
    );
    assert_eq!(
        seq.matches[1].r#match,
        Some(request_match::Match::PathRegex("^(?:/api/list)$".into()))
    );
    let vote = &v.routes[1];
    assert_eq!(vote.response_classes.len(), 2);
    assert!(vote.response_classes[0].is_failure);
    // One bound alone is kept, the other left open (0).
    let Some(response_match::Match::Not(inner)) =
        &vote.response_classes[1].condition.as_ref().unwrap().r#match
    else {
        panic!()
    };
    assert_eq!(
        inner.r#match,
        Some(response_match::Match::Status(api::HttpStatusRange {
            min: 400,
            max: 0
        }))
    );
    assert_eq!(v.retry_budget.retry_ratio, 0.2);
    assert_eq!(v.retry_budget.ttl_ms, 10_000);
    assert_eq!(
        v.dst_overrides
            .iter()
            .map(|d| (d.authority.as_str(), d.weight))
            .collect::<Vec<_>>(),
        [
            ("web-v1.emojivoto.svc.cluster.local:80", 9000),
            ("web-v2.emojivoto.svc.cluster.local:80", 1000)
        ]
    );
}

use mesh_api::destination as api;

#[test]
fn defaults_without_a_budget() {
    let v = parse_yaml("metadata: {name: web.ns.svc.cluster.local}\n", CD).unwrap();
    assert!(v.routes.is_empty());
    assert_eq!(v.retry_budget.min_retries_per_second, 10);
    assert_eq!(v.retry_budget.ttl_ms, 10_000);
}

#[test]
fn every_problem_is_named_with_its_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "name: a\ncondition: {pathRegex: '/a('}",
            "spec.routes[0].condition.pathRegex",
            "not a valid regex",
        ),
        (
            "name: a\ncondition: {method: 'G T'}",
            "spec.routes[0].condition.method",
            "not an HTTP method",
        ),
        ("name: a\ncondition: {}", "spec.routes[0].condition", "empty condition"),
        ("name: a", "spec.routes[0].condition", "required"),
        (
            "condition: {method: GET}",
            "spec.routes[0].name",
            "required",
        ),
        (
            "name: a\ncondition: {all: []}",
            "spec.routes[0].condition.all",
            "empty list",
        ),
        (
            "name: a\ncondition: {any: [{not: {}}]}",
            "spec.routes[0].condition.any[0].not",
            "empty condition",
        ),
        (
            "name: a\ncondition: {method: GET}\ntimeout: 10",
            "spec.routes[0].timeout",
            "lacks a unit",
        ),
        (
            "name: a\ncondition: {method: GET}\ntimeout: 0s",
            "spec.routes[0].timeout",
            "more than zero",
        ),
        (
            "name: a\ncondition: {method: GET}\nresponseClasses: [{condition: {status: {min: 500, max: 400}}}]",
            "spec.routes[0].responseClasses[0].condition.status",
            "min 500 is greater than max 400",
        ),
        (
            "name: a\ncondition: {method: GET}\nresponseClasses: [{condition: {status: {min: 700}}}]",
            "spec.routes[0].responseClasses[0].condition.status.min",
            "not an HTTP status",
        ),
        (
            "name: a\ncondition: {method: GET}\nresponseClasses: [{condition: {status: {}}}]",
            "spec.routes[0].responseClasses[0].condition.status",
            "empty range",
        ),
        (
            "name: a\ncondition: {method: GET}\nresponseClasses: [{isFailure: true}]",
            "spec.routes[0].responseClasses[0].condition",
            "required",
        ),
    ];
    for (route, path, reason) in cases {
        let p = problems(&with_route(route));
        assert!(
            p.iter()
                .any(|p| p.starts_with(&format!("{path}: ")) && p.contains(reason)),
            "{route:?}: want {path}: …{reason}…, got {p:#?}"
        );
    }
}

#[test]
fn budgets_splits_and_names() {
    let base = "metadata: {name: web.ns.svc.cluster.local}\nspec:\n";
    let p = problems(&format!(
        "{base}  retryBudget: {{retryRatio: 1001, ttl: 2m}}\n"
    ));
    assert!(
        p.iter()
            .any(|p| p.starts_with("spec.retryBudget.retryRatio: ") && p.contains("out of range")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.starts_with("spec.retryBudget.minRetriesPerSecond: required")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.starts_with("spec.retryBudget.ttl: ") && p.contains("1s to 60s")),
        "{p:?}"
    );

    let p = problems(&format!(
        "{base}  dstOverrides:\n  - {{authority: 'a b', weight: 1}}\n  - {{authority: b.ns.svc.cluster.local, weight: lots}}\n"
    ));
    assert!(
        p.iter()
            .any(|p| p.starts_with("spec.dstOverrides[0].authority: ")),
        "{p:?}"
    );
    assert!(p.iter().any(|p| p.starts_with("spec.dstOverrides[1].weight: ") && p.contains("not a quantity")), "{p:?}");
    let p = problems(&format!(
        "{base}  dstOverrides:\n  - {{authority: a.ns.svc.cluster.local, weight: 0}}\n"
    ));
    assert!(
        p.iter()
            .any(|p| p.starts_with("spec.dstOverrides: every weight is zero")),
        "{p:?}"
    );

    let p = problems("metadata: {name: web}\n");
    assert!(
        p[0].starts_with("metadata.name: ") && p[0].contains("svc.cluster.local"),
        "{p:?}"
    );
    let p =
        problems("apiVersion: linkerd.io/v1alpha2\nmetadata: {name: web.ns.svc.cluster.local}\n");
    assert!(p[0].starts_with("apiVersion: "), "{p:?}");
}

#[test]
fn yaml_errors_name_the_field_and_line() {
    let p = problems("metadata: {name: web.ns.svc.cluster.local}\nspec:\n  routes:\n  - name: a\n    conditon: {method: GET}\n");
    assert!(
        p[0].starts_with("spec.routes[0].conditon: unknown field"),
        "{p:?}"
    );
    assert!(
        p[0].contains("conditon") && p[0].contains("line 5"),
        "{p:?}"
    );
    let p = problems("spec: [");
    assert_eq!(p.len(), 1, "{p:?}");
}

#[test]
fn regexes_are_anchored_and_bounded() {
    let re = mesh_api::path_regex::compile("/api/.*|/x").unwrap();
    assert!(re.is_match("/x") && re.is_match("/api/v"));
    assert!(!re.is_match("/xy") && !re.is_match("/y/api/v"));
    let huge = "(a{1000}){1000}";
    let p = problems(&with_route(&format!(
        "name: a\ncondition: {{pathRegex: '{huge}'}}"
    )));
    assert!(
        p[0].starts_with("spec.routes[0].condition.pathRegex: ") && p[0].contains("too large"),
        "{p:?}"
    );
}

/// The validator and the proxy read a path regex by one rule: what the controller sends
/// for each pattern of `mesh_api::path_regex::EXAMPLES` matches exactly the paths the
/// table says, read as it is (a reader that does not wrap it) and wrapped once more (as
/// the proxy does).
#[test]
fn sent_path_regexes_follow_the_shared_rule() {
    for (pattern, path, matches) in mesh_api::path_regex::EXAMPLES {
        let spec = serde_json::json!({
            "routes": [{"name": "r", "condition": {"pathRegex": pattern}}],
        });
        let v = super::validate_object("web.ns.svc.cluster.local", "ns", spec, "cluster.local")
            .unwrap_or_else(|e| panic!("{pattern:?}: {e:?}"));
        let Some(request_match::Match::PathRegex(sent)) =
            &v.routes[0].condition.as_ref().unwrap().r#match
        else {
            panic!("{pattern:?}: {:?}", v.routes[0].condition)
        };
        let literal = regex::Regex::new(sent).unwrap();
        assert_eq!(
            literal.is_match(path),
            *matches,
            "{pattern:?} sent as {sent:?} on {path:?}"
        );
        let wrapped = mesh_api::path_regex::compile(sent).unwrap();
        assert_eq!(
            wrapped.is_match(path),
            *matches,
            "{pattern:?} sent as {sent:?} on {path:?}"
        );
    }
}

#[test]
fn max_retries_zero_turns_retries_off() {
    let v = parse_yaml(
        &with_route("name: a\ncondition: {method: GET}\nisRetryable: true\nmaxRetries: 0"),
        CD,
    )
    .unwrap();
    assert!(!v.routes[0].is_retryable);
}

/// An object from the API server is judged whole too: every decoding problem, under
/// `spec.`, and the checks of what did decode.
#[test]
fn objects_report_every_problem() {
    let spec = serde_json::json!({
        "routes": [
            {"name": "a", "condition": {"method": "GET"}, "timeout": 5},
            {"name": "b", "condition": {"pathRegex": "("}},
        ],
        "dstOverrides": [{"authority": "x.ns.svc.cluster.local:80", "weight": []}],
    });
    let Err(Problems(p)) =
        super::validate_object("web.ns.svc.cluster.local", "ns", spec, "cluster.local")
    else {
        panic!("invalid")
    };
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        // A JSON object's fields in name order, then the semantic checks.
        [
            "spec.dstOverrides[0].weight",
            "spec.routes[0].timeout",
            "spec.routes[1].condition.pathRegex",
        ],
        "{p:?}"
    );
}

/// `routes:` with nothing after it is an empty list, as YAML users write it.
#[test]
fn empty_lists_may_be_written_as_nothing() {
    let v = parse_yaml(
        "metadata: {name: web.ns.svc.cluster.local}\nspec:\n  routes:\n  dstOverrides:\n",
        CD,
    )
    .unwrap();
    assert!(v.routes.is_empty());
    // A repeated key is an error, with the line of the repetition.
    let p =
        problems("metadata: {name: web.ns.svc.cluster.local}\nspec:\n  routes: []\n  routes: []\n");
    assert!(
        p[0].starts_with("spec.routes: duplicate mapping key `routes`") && p[0].contains("line 4"),
        "{p:?}"
    );
}

/// A profile lives in its service's namespace: one named for another namespace is
/// refused with the reason, wherever it is judged (an object from the API server, a
/// document that says its namespace, an admission request's object), never accepted
/// and then ignored.
#[test]
fn a_profile_for_another_namespace_is_refused_everywhere() {
    let spec = serde_json::json!({"routes": [{"name": "a", "condition": {"method": "GET"}}]});
    let Err(Problems(p)) = super::validate_object(
        "web.other.svc.cluster.local",
        "demo",
        spec.clone(),
        "cluster.local",
    ) else {
        panic!("refused")
    };
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].path, "metadata.name");
    for words in [
        "\"web.other.svc.cluster.local\"",
        "namespace \"other\"",
        "in namespace \"demo\"",
        "must live in its service's namespace",
        "client-side profiles",
        "not supported",
    ] {
        assert!(p[0].reason.contains(words), "{words}: {}", p[0].reason);
    }
    assert!(super::validate_object(
        "web.demo.svc.cluster.local",
        "demo",
        spec.clone(),
        "cluster.local"
    )
    .is_ok());

    let doc = "metadata: {name: web.other.svc.cluster.local, namespace: demo}\n";
    let p = problems(doc);
    assert!(
        p.len() == 1 && p[0].starts_with("metadata.name: ") && p[0].contains("must live in"),
        "{p:?}"
    );
    // Without a namespace, the document may be applied anywhere: only its name is judged.
    assert!(parse_yaml("metadata: {name: web.other.svc.cluster.local}\n", CD).is_ok());

    let object = serde_json::json!({
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": "web.other.svc.cluster.local", "namespace": "demo"},
        "spec": spec,
    });
    let Err(Problems(p)) = super::validate_value(object, "cluster.local") else {
        panic!("refused")
    };
    assert_eq!(p[0].path, "metadata.name", "{p:?}");
}

/// Weights: exactly what the CRD's schema takes (an integer, or a string in the
/// quantity grammar), less negative ones; a number with a fraction is refused with how
/// to write it, as the API server refuses it.
#[test]
fn weights_are_integers_or_quantity_strings() {
    let weight = |w: &str| -> Result<u32, String> {
        let doc = format!(
            "metadata: {{name: web.ns.svc.cluster.local}}\nspec:\n  dstOverrides:\n  - {{authority: a.ns.svc.cluster.local, weight: {w}}}\n"
        );
        match parse_yaml(&doc, CD) {
            Ok(v) => Ok(v.dst_overrides[0].weight),
            Err(p) => Err(p.to_string()),
        }
    };
    for (w, expected) in [
        ("1", 10_000),
        ("100", 1_000_000),
        ("1.0", 10_000),
        ("'1'", 10_000),
        ("'0.5'", 5_000),
        ("'.5'", 5_000),
        ("'5.'", 50_000),
        ("500m", 5_000),
        ("'+500m'", 5_000),
        ("'1e2'", 1_000_000),
        ("'1E-1'", 1_000),
        ("1k", 10_000_000),
        ("1Ki", 10_240_000),
        ("'100u'", 1),
    ] {
        assert_eq!(weight(w), Ok(expected), "{w}");
    }
    let refused = weight("0.5").unwrap_err();
    assert!(
        refused.contains("spec.dstOverrides[0].weight")
            && refused.contains("fraction")
            && refused.contains("\"0.5\"")
            && refused.contains("\"500m\""),
        "{refused}"
    );
    for (w, why) in [
        ("-1", "zero or more"),
        ("'-1'", "zero or more"),
        ("lots", "not a quantity"),
        ("'1.5.2'", "not a quantity"),
        ("'1e'", "not a quantity"),
        ("'1e1.5'", "not a quantity"),
        ("'1 k'", "not a quantity"),
        ("'1KI'", "not a quantity"),
        ("'.'", "not a quantity"),
        ("''", "not a quantity"),
        ("'1E'", "too large"),
        ("true", "an integer or a quantity string"),
    ] {
        let e = weight(w).expect_err(w);
        assert!(e.contains(why), "{w}: {e}");
    }
}

/// The validator's quantity grammar is the CRD's `pattern`, which the API server
/// checks weights' strings with; and the CRD in `manifests/` carries that pattern.
#[test]
fn the_quantity_grammar_is_the_crds_pattern() {
    let pattern = regex::Regex::new(validate::QUANTITY_PATTERN).unwrap();
    for s in [
        "1", "0.5", ".5", "5.", "+1", "-1", "500m", "1Ki", "1E", "1e3", "1E-2", "1e+2", "1e1.5",
        "1.5.2", "", ".", "1 k", "1KI", "1ki", "lots", "0x10", "1e", "m", "1mi", "12Gi",
    ] {
        let doc = format!(
            "metadata: {{name: web.ns.svc.cluster.local}}\nspec:\n  dstOverrides:\n  - {{authority: a.ns.svc.cluster.local, weight: {s:?}}}\n"
        );
        // "Too large" is the value's fault, not the grammar's.
        let grammatical = match parse_yaml(&doc, CD) {
            Ok(_) => true,
            Err(p) => p.to_string().contains("too large"),
        };
        assert_eq!(pattern.is_match(s), grammatical, "{s:?}");
    }
    let crd: serde_json::Value = crate::yaml::from_str(include_str!(
        "../../../../manifests/crds/serviceprofiles.yaml"
    ))
    .unwrap();
    let weight = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["dstOverrides"]["items"]["properties"]["weight"];
    assert_eq!(weight["x-kubernetes-int-or-string"], true, "{weight}");
    assert_eq!(weight["pattern"], validate::QUANTITY_PATTERN, "{weight}");
}

/// An admission request's object is judged whole: every decoding problem (a weight
/// with a fraction, a number for a duration, a string for a boolean), the name's, and
/// the semantic checks of what decoded, in one answer.
#[test]
fn an_object_with_several_problems_reports_every_one() {
    let object = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "web.other.svc.cluster.local", "namespace": "demo", "uid": "x"},
        "spec": {
            "routes": [
                {"name": "a", "condition": {"method": "GET"}, "timeout": 5, "isRetryable": "maybe"},
                {"name": "b", "condition": {"pathRegex": "("}},
            ],
            "dstOverrides": [
                {"authority": "web.demo.svc.cluster.local", "weight": 0.5},
                {"authority": "v2.demo.svc.cluster.local", "weight": "lots"},
            ],
        },
    });
    let Err(Problems(p)) = super::validate_value(object, "cluster.local") else {
        panic!("invalid")
    };
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.dstOverrides[0].weight",
            "spec.routes[0].isRetryable",
            "spec.routes[0].timeout",
            "metadata.name",
            "spec.routes[1].condition.pathRegex",
            "spec.dstOverrides[1].weight",
        ],
        "{p:#?}"
    );
}
