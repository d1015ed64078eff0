//! Process-level tests of `mesh profile`: the real `mesh` binary, its output and exit
//! code, as a user or a CI job sees them.
//!
//! `validate` must name the field and the reason of every problem in every document and
//! exit 1; whatever `--template` and `--open-api` print must pass `validate`; bad flags
//! exit 64.

use mesh_core::profile::{spec::RequestMatchSpec, ServiceProfile};
use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

const EX_USAGE: i32 = 64;

/// Runs `mesh` with `args`, `stdin` fed to it (the inject tests use it too).
pub(super) fn mesh(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mesh starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("mesh reads its stdin");
    child.wait_with_output().expect("mesh runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts `mesh profile validate -` accepts `yaml` (with `extra` flags).
fn assert_valid(yaml: &str, extra: &[&str]) -> String {
    let mut args = vec!["profile", "validate", "-"];
    args.extend_from_slice(extra);
    let out = mesh(&args, yaml);
    assert_eq!(
        out.status.code(),
        Some(0),
        "validate rejected:\n{yaml}\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

const GOOD: &str = "\
apiVersion: mesh.rs/v1alpha1
kind: ServiceProfile
metadata:
  name: web.emojivoto.svc.cluster.local
  namespace: emojivoto
spec:
  routes:
  - name: GET /api/list
    condition:
      method: GET
      pathRegex: /api/list
    responseClasses:
    - condition:
        status: {min: 500}
      isFailure: true
    isRetryable: true
    timeout: 250ms
    maxRetries: 3
  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
    ttl: 10s
";

/// Five mistakes, one per route or field, after a Service that is skipped.
const BAD: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
---
apiVersion: mesh.rs/v1alpha1
kind: ServiceProfile
metadata:
  name: web.emojivoto.svc.cluster.local
spec:
  routes:
  - name: bad regex
    condition:
      pathRegex: /api/(list
  - name: bad timeout
    condition:
      method: GET
    timeout: soon
  - name: empty condition
    condition: {}
  - name: reversed range
    condition:
      method: GET
    responseClasses:
    - condition:
        status: {min: 500, max: 400}
      isFailure: true
  retryBudget:
    retryRatio: 1500
    minRetriesPerSecond: 10
    ttl: 10s
";

#[test]
fn validate_accepts_a_good_profile() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let out = mesh(&["profile", "validate", file.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{}: document 1 (web.emojivoto.svc.cluster.local): valid, 1 route\n",
            file.display()
        )
    );
}

/// Type errors are problems too: all of them in one run, with the fields that did
/// decode still checked, and the first with its line.
#[test]
fn validate_names_every_type_error_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("types.yaml");
    std::fs::write(
        &file,
        "apiVersion: mesh.rs/v1alpha1
kind: ServiceProfile
metadata: {name: web.emojivoto.svc.cluster.local}
spec:
  routes:
  - name: a
    isRetryable: yes please
    condition: {method: GET}
  - name: b
    condition: {pathRegex: /b}
    timeout: [1s]
  - name: c
    condition: {pathRegex: '('}
  retryBudget: {retryRatio: lots, minRetriesPerSecond: 10, ttl: 10s}
",
    )
    .unwrap();
    let out = mesh(&["profile", "validate", file.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stdout = stdout(&out);
    let fields: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(": ").nth(2).unwrap_or_else(|| panic!("{l:?}")))
        .collect();
    assert_eq!(
        fields,
        [
            // Decoding problems in the document's order...
            "spec.routes[0].isRetryable",
            "spec.routes[1].timeout",
            "spec.retryBudget.retryRatio",
            // ...then the checks of what did decode.
            "spec.routes[2].condition.pathRegex",
        ],
        "{stdout}"
    );
    assert!(
        stdout.lines().next().unwrap().contains("(line 7, column"),
        "{stdout}"
    );
}

/// What the API server and the controller refuse, `validate` refuses, every problem in
/// one run: a weight with a fraction (the CRD's schema takes an integer or a string),
/// and a profile in another namespace than its service's (which the controller would
/// otherwise ignore: client-side profiles are not supported).
#[test]
fn validate_refuses_what_the_cluster_refuses() {
    let out = mesh(
        &["profile", "validate", "-"],
        "apiVersion: mesh.rs/v1alpha1
kind: ServiceProfile
metadata: {name: web.other.svc.cluster.local, namespace: demo}
spec:
  routes:
  - name: a
    condition: {method: GET}
    timeout: 5
  dstOverrides:
  - {authority: web-v1.other.svc.cluster.local, weight: 0.5}
  - {authority: web-v2.other.svc.cluster.local, weight: '0.5'}
  - {authority: web-v3.other.svc.cluster.local, weight: 500m}
",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stdout = stdout(&out);
    let problems: Vec<(&str, &str)> = stdout
        .lines()
        .map(|l| {
            let mut parts = l.splitn(4, ": ");
            (parts.nth(2).unwrap_or(""), parts.next().unwrap_or(""))
        })
        .collect();
    let fields: Vec<&str> = problems.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        fields,
        [
            "spec.routes[0].timeout",
            "spec.dstOverrides[0].weight",
            "metadata.name",
        ],
        "{stdout}"
    );
    assert!(
        problems[1].1.contains("fraction") && problems[1].1.contains("\"500m\""),
        "{stdout}"
    );
    assert!(
        problems[2]
            .1
            .contains("must live in its service's namespace")
            && problems[2].1.contains("client-side profiles"),
        "{stdout}"
    );
}

#[test]
fn validate_names_every_problem_with_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, BAD).unwrap();
    let out = mesh(&["profile", "validate", file.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let prefix = format!(
        "{}: document 2 (web.emojivoto.svc.cluster.local): ",
        file.display()
    );
    let stdout = stdout(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{}: document 1 (Service web): skipped, not a ServiceProfile",
            file.display()
        )
    );
    let problems: Vec<&str> = lines[1..]
        .iter()
        .map(|l| {
            l.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{l:?} starts with {prefix:?}"))
        })
        .collect();
    let expected = [
        ("spec.routes[0].condition.pathRegex: ", "not a valid regex"),
        ("spec.routes[1].timeout: ", "\"soon\""),
        ("spec.routes[2].condition: ", "empty condition"),
        (
            "spec.routes[3].responseClasses[0].condition.status: ",
            "min 500 is greater than max 400",
        ),
        ("spec.retryBudget.retryRatio: ", "out of range"),
    ];
    assert_eq!(problems.len(), expected.len(), "{stdout}");
    for (problem, (field, why)) in problems.iter().zip(expected) {
        assert!(
            problem.starts_with(field) && problem.contains(why),
            "{problem:?} should be {field}…{why}…"
        );
    }
    assert!(
        stderr(&out).contains("1 of 1 ServiceProfiles invalid"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_reports_each_document_of_a_stream() {
    let wrong_domain = GOOD.replace("cluster.local", "example.org");
    let stream = format!("---\n{GOOD}---\n{wrong_domain}");
    let out = mesh(&["profile", "validate", "-"], &stream);
    assert_eq!(out.status.code(), Some(1));
    let stdout = stdout(&out);
    assert!(
        stdout.contains("<stdin>: document 1 (web.emojivoto.svc.cluster.local): valid"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "<stdin>: document 2 (web.emojivoto.svc.example.org): metadata.name: \
             \"web.emojivoto.svc.example.org\" names no service"
        ),
        "{stdout}"
    );
    // The cluster domain is a flag.
    let out = mesh(
        &[
            "profile",
            "validate",
            "--cluster-domain",
            "example.org",
            "-",
        ],
        &wrong_domain,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn validate_reports_yaml_errors_at_the_files_line() {
    let broken = format!("{GOOD}---\nmetadata:\n  name: [unclosed\n");
    let out = mesh(&["profile", "validate", "-"], &broken);
    assert_eq!(out.status.code(), Some(1));
    let stdout = stdout(&out);
    let line = stdout
        .lines()
        .find(|l| l.contains("document 2"))
        .unwrap_or_else(|| panic!("{stdout}"));
    // GOOD is 22 lines; the broken value is on the file's 25th, or the end after it.
    assert!(
        line.contains("line 25") || line.contains("line 26"),
        "{line}"
    );
}

#[test]
fn validate_without_a_profile_or_file_fails() {
    let out = mesh(&["profile", "validate", "-"], "# nothing\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no ServiceProfile found"));
    let out = mesh(&["profile", "validate", "/nonexistent/profile.yaml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/profile.yaml"));
    let out = mesh(&["profile", "validate"], "");
    assert_eq!(out.status.code(), Some(EX_USAGE));
}

#[test]
fn the_template_validates() {
    let out = mesh(&["profile", "--template", "books", "-n", "shop"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let template = stdout(&out);
    let report = assert_valid(&template, &[]);
    assert_eq!(
        report,
        "<stdin>: document 1 (books.shop.svc.cluster.local): valid, 2 routes\n"
    );
    // Every field is explained.
    for field in [
        "routes:",
        "condition:",
        "method:",
        "pathRegex:",
        "all:",
        "any:",
        "not:",
        "responseClasses:",
        "status:",
        "min:",
        "max:",
        "isFailure:",
        "isRetryable:",
        "timeout:",
        "maxRetries:",
        "retryBudget:",
        "retryRatio:",
        "minRetriesPerSecond:",
        "ttl:",
        "dstOverrides:",
        "authority:",
        "weight:",
    ] {
        assert!(template.contains(field), "the template shows {field}");
    }

    // Another cluster domain names the profile after it.
    let out = mesh(
        &[
            "profile",
            "--template",
            "books",
            "--cluster-domain",
            "example.org",
        ],
        "",
    );
    let template = stdout(&out);
    assert!(template.contains("name: books.default.svc.example.org"));
    assert_valid(&template, &["--cluster-domain", "example.org"]);
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &["profile"][..],
        &["profile", "--template"],
        &["profile", "--template", "Not_A_Name"],
        &["profile", "--template", "books", "-n", "shop.x"],
        &["profile", "--template", "--open-api", "spec.yaml", "books"],
        &["profile", "--open-api", "spec.yaml"],
        &["profile", "books"],
    ] {
        let out = mesh(args, "");
        assert_eq!(
            out.status.code(),
            Some(EX_USAGE),
            "mesh {args:?}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).is_empty(), "mesh {args:?} says why");
    }
}

const OPENAPI3: &str = r#"
openapi: 3.0.3
info: {title: books, version: "1"}
servers:
- url: https://books.example.com/api/v1/
paths:
  /books:
    get:
      responses:
        200: {description: the books}
        default: {description: an error}
    post:
      x-mesh-timeout: 2s
      responses:
        "201": {description: created}
        "400": {description: bad book}
        5XX: {description: broken}
  /books/{id}:
    parameters:
    - {name: id, in: path, required: true, schema: {type: string}}
    get:
      x-linkerd-retryable: true
      x-linkerd-timeout: 500ms
      x-mesh-max-retries: 2
      responses:
        "200": {description: the book}
        "404": {description: no such book}
        "503": {description: try again}
    delete:
      responses:
        "204": {description: gone}
"#;

const SWAGGER2: &str = r#"{
  "swagger": "2.0",
  "info": {"title": "users", "version": "1"},
  "basePath": "/svc/",
  "paths": {
    "/users/{userId}/orders.json": {
      "get": {
        "x-mesh-retryable": true,
        "responses": {"200": {"description": "ok"}, "503": {"description": "busy"}}
      }
    },
    "/health": {"head": {"responses": {}}}
  }
}"#;

/// Runs `--open-api` on `spec` and checks the output validates; the parsed profile.
fn open_api(spec: &str, file_name: &str, service: &str) -> ServiceProfile {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(file_name);
    std::fs::write(&file, spec).unwrap();
    let out = mesh(
        &[
            "profile",
            "--open-api",
            file.to_str().unwrap(),
            service,
            "--namespace",
            "shop",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let yaml = stdout(&out);
    assert_valid(&yaml, &[]);
    mesh_core::yaml::from_str(&yaml).expect("the output is a profile")
}

/// A route's condition as `(method, pathRegex)`: generated routes are `all: [m, p]`.
fn method_and_regex(c: &RequestMatchSpec) -> (String, String) {
    let all = c.all.as_ref().expect("an `all` condition");
    assert_eq!(all.len(), 2, "{c:?}");
    (
        all[0].method.clone().expect("method first"),
        all[1].path_regex.clone().expect("pathRegex second"),
    )
}

#[test]
fn open_api_3_yaml_makes_a_route_per_operation() {
    let sp = open_api(OPENAPI3, "books.yaml", "books");
    assert_eq!(sp.api_version, "mesh.rs/v1alpha1");
    assert_eq!(sp.kind, "ServiceProfile");
    assert_eq!(sp.metadata.name, "books.shop.svc.cluster.local");
    assert_eq!(sp.metadata.namespace.as_deref(), Some("shop"));
    let routes = &sp.spec.routes;
    let summary: Vec<(&str, (String, String))> = routes
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                method_and_regex(r.condition.as_ref().expect("a condition")),
            )
        })
        .collect();
    let route = |name: &'static str, m: &str, re: &str| (name, (m.to_string(), re.to_string()));
    assert_eq!(
        summary,
        [
            route("GET /api/v1/books", "GET", "/api/v1/books"),
            route("POST /api/v1/books", "POST", "/api/v1/books"),
            route("DELETE /api/v1/books/{id}", "DELETE", "/api/v1/books/[^/]*"),
            route("GET /api/v1/books/{id}", "GET", "/api/v1/books/[^/]*"),
        ]
    );
    let classes = |i: usize| -> Vec<(i64, i64, bool)> {
        routes[i]
            .response_classes
            .iter()
            .map(|c| {
                let s = c
                    .condition
                    .as_ref()
                    .and_then(|c| c.status.as_ref())
                    .expect("a status condition");
                (s.min.unwrap(), s.max.unwrap(), c.is_failure)
            })
            .collect()
    };
    assert_eq!(classes(0), [(200, 200, false)]);
    // Single codes first, then ranges.
    assert_eq!(
        classes(1),
        [(201, 201, false), (400, 400, false), (500, 599, true)]
    );
    assert_eq!(
        classes(3),
        [(200, 200, false), (404, 404, false), (503, 503, true)]
    );
    assert_eq!(routes[1].timeout.as_deref(), Some("2s"));
    assert!(!routes[1].is_retryable);
    assert!(routes[3].is_retryable);
    assert_eq!(routes[3].timeout.as_deref(), Some("500ms"));
    assert_eq!(routes[3].max_retries, Some(2));
    assert_eq!(routes[2].timeout, None);
}

#[test]
fn swagger_2_json_respects_the_base_path() {
    let sp = open_api(SWAGGER2, "users.json", "users");
    let routes = &sp.spec.routes;
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].name, "HEAD /svc/health");
    assert_eq!(routes[1].name, "GET /svc/users/{userId}/orders.json");
    assert_eq!(
        method_and_regex(routes[1].condition.as_ref().unwrap()),
        ("GET".into(), r"/svc/users/[^/]*/orders\.json".into())
    );
    assert!(routes[1].is_retryable);
    assert_eq!(routes[1].response_classes.len(), 2);
    assert!(routes[1].response_classes[1].is_failure);
    assert!(routes[0].response_classes.is_empty());
}

#[test]
fn open_api_reads_stdin() {
    let out = mesh(&["profile", "--open-api", "-", "users"], SWAGGER2);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_valid(&stdout(&out), &[]);
}

#[test]
fn open_api_problems_name_the_field() {
    let cases = [
        (
            "{\"swagger\": \"2.0\",",
            "<stdin>: (document): not valid JSON",
        ),
        (
            "info: {title: x}\npaths: {}\n",
            "<stdin>: (document): not an OpenAPI spec",
        ),
        ("openapi: 3.0.0\n", "<stdin>: paths: required"),
        (
            "openapi: 3.0.0\npaths: {}\n",
            "<stdin>: paths: no operations",
        ),
        (
            "openapi: 3.0.0\npaths:\n  /x:\n    get:\n      x-mesh-timeout: soon\n",
            "<stdin>: paths[\"/x\"].get.x-mesh-timeout: \"soon\"",
        ),
        (
            "openapi: 3.0.0\npaths:\n  /x:\n    get:\n      responses: {\"700\": {}}\n",
            "<stdin>: paths[\"/x\"].get.responses[\"700\"]: not a status code",
        ),
        (
            "swagger: \"2.0\"\npaths:\n  /x:\n    get:\n      x-linkerd-retryable: 1\n",
            "<stdin>: paths[\"/x\"].get.x-linkerd-retryable: expected true or false",
        ),
    ];
    for (spec, expected) in cases {
        let out = mesh(&["profile", "--open-api", "-", "books"], spec);
        assert_eq!(out.status.code(), Some(1), "{spec}");
        assert!(stdout(&out).is_empty(), "nothing is printed for {spec}");
        assert!(
            stderr(&out).contains(expected),
            "{spec}: {} should contain {expected}",
            stderr(&out)
        );
    }
    let missing = Path::new("/nonexistent/openapi.yaml");
    let out = mesh(
        &["profile", "--open-api", missing.to_str().unwrap(), "books"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("reading /nonexistent/openapi.yaml"));
}
