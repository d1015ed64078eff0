//! `mesh profile --open-api`: a profile with one route per operation of an OpenAPI 2
//! (Swagger) or 3 spec, as `linkerd profile --open-api` makes one.
//!
//! Each (method, path) becomes a route named `"<METHOD> <path>"` with the condition
//! `all: [{method}, {pathRegex}]`, where a `{param}` segment matches `[^/]*` and the
//! rest of the path is matched literally; the path includes Swagger's `basePath` or the
//! path of OpenAPI 3's first server. Each documented status code becomes a response
//! class (`min = max = code`, a failure from 500 on); OpenAPI 3's `5XX` ranges become
//! ranges, after the single codes so that those win. The operation's vendor extensions
//! `x-mesh-retryable` / `x-linkerd-retryable`, `x-mesh-timeout` / `x-linkerd-timeout`
//! and `x-mesh-max-retries` set `isRetryable`, `timeout` and `maxRetries`.
//!
//! Paths are taken in sorted order, as Linkerd does: a literal segment sorts before a
//! `{param}` one (`{` follows every letter and digit), so `/books/new` is tried before
//! `/books/{id}`, which would also match it. A spec is read whole before anything is
//! printed, and every problem in it is reported with the field it is in.

use super::{Input, Service};
use anyhow::Context as _;
use mesh_api::duration;
use mesh_core::{
    profile::{
        self,
        spec::{
            Metadata, RequestMatchSpec, ResponseClassSpec, ResponseMatchSpec, RouteSpec,
            ServiceProfileSpec, StatusRangeSpec,
        },
        ServiceProfile,
    },
    yaml,
};
use serde_json::{Map, Value};
use std::{fmt, io::Write};

/// The operations of a path item, in the order routes are made for them.
const METHODS: [&str; 8] = [
    "delete", "get", "head", "options", "patch", "post", "put", "trace",
];

/// One thing wrong with a spec, at a field (`paths["/books"].get.responses["abc"]`).
#[derive(Debug, PartialEq, Eq)]
struct Problem {
    path: String,
    reason: String,
}

/// Reads the spec, prints the profile; every problem in the spec otherwise.
pub(super) fn run(input: &Input, service: &Service, out: &mut impl Write) -> anyhow::Result<()> {
    let text = input.read()?;
    let routes = match routes(&text) {
        Ok(routes) => routes,
        Err(problems) => {
            for p in &problems {
                crate::note(&format!("{input}: {p}"));
            }
            let n = problems.len();
            let s = if n == 1 { "" } else { "s" };
            anyhow::bail!("{input} is not a usable OpenAPI spec: {n} problem{s}");
        }
    };
    let sp = ServiceProfile {
        api_version: profile::API_VERSION.into(),
        kind: profile::KIND.into(),
        metadata: Metadata {
            name: service.fqdn(),
            namespace: Some(service.namespace.clone()),
            other: Map::new(),
        },
        spec: ServiceProfileSpec {
            routes,
            ..ServiceProfileSpec::default()
        },
    };
    // What is printed must be what the controller accepts: check it with its checks.
    if let Err(problems) = profile::validate_document(&sp, Some(&service.cluster_domain)) {
        anyhow::bail!("the profile made from {input} is invalid:\n{problems}");
    }
    let yaml = yaml::to_string(&sp).context("writing the profile as YAML")?;
    writeln!(
        out,
        "# ServiceProfile for {}.{}, made from {input} by `mesh profile --open-api`.",
        service.name, service.namespace
    )?;
    out.write_all(yaml.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The routes of a spec, JSON or YAML.
fn routes(text: &str) -> Result<Vec<RouteSpec>, Vec<Problem>> {
    let doc = parse(text).map_err(|reason| {
        vec![Problem {
            path: "(document)".into(),
            reason,
        }]
    })?;
    let mut problems = Vec::new();
    let Some(doc) = doc.as_object() else {
        fail(
            &mut problems,
            "(document)".into(),
            format!("expected an object, found {}", kind(&doc)),
        );
        return Err(problems);
    };

    let base = match version(doc) {
        Err(reason) => {
            fail(&mut problems, "(document)".into(), reason);
            String::new()
        }
        Ok(Version::Swagger2) => match doc.get("basePath") {
            None => String::new(),
            Some(Value::String(b)) if b.starts_with('/') => b.trim_end_matches('/').into(),
            Some(Value::String(b)) => {
                fail(
                    &mut problems,
                    "basePath".into(),
                    format!("{b:?} does not start with \"/\""),
                );
                String::new()
            }
            Some(v) => {
                fail(
                    &mut problems,
                    "basePath".into(),
                    format!("expected a string, found {}", kind(v)),
                );
                String::new()
            }
        },
        Ok(Version::OpenApi3) => server_path(doc).unwrap_or_else(|(path, reason)| {
            fail(&mut problems, path, reason);
            String::new()
        }),
    };

    let paths = match doc.get("paths") {
        Some(Value::Object(paths)) => paths,
        Some(v) => {
            fail(
                &mut problems,
                "paths".into(),
                format!("expected an object, found {}", kind(v)),
            );
            return Err(problems);
        }
        None => {
            fail(
                &mut problems,
                "paths".into(),
                "required: the operations to make routes of".into(),
            );
            return Err(problems);
        }
    };

    let mut routes = Vec::new();
    let mut sorted: Vec<(&String, &Value)> = paths.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (key, item) in sorted {
        if key.starts_with("x-") {
            continue;
        }
        let at = format!("paths[{key:?}]");
        if !key.starts_with('/') {
            fail(&mut problems, at, "a path must start with \"/\"".into());
            continue;
        }
        let Some(item) = item.as_object() else {
            fail(
                &mut problems,
                at,
                format!("expected an object, found {}", kind(item)),
            );
            continue;
        };
        if item.contains_key("$ref") {
            fail(
                &mut problems,
                format!("{at}.$ref"),
                "a path item by reference is not followed: write its operations in place".into(),
            );
            continue;
        }
        let path = format!("{base}{key}");
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let at = format!("{at}.{method}");
            let Some(op) = op.as_object() else {
                fail(
                    &mut problems,
                    at,
                    format!("expected an object, found {}", kind(op)),
                );
                continue;
            };
            match route(&at, &method.to_ascii_uppercase(), &path, op) {
                Ok(r) => routes.push(r),
                Err(mut more) => problems.append(&mut more),
            }
        }
    }
    if routes.is_empty() && problems.is_empty() {
        problems.push(Problem {
            path: "paths".into(),
            reason: format!(
                "no operations ({}): nothing to make routes of",
                METHODS.join(", ")
            ),
        });
    }
    if problems.is_empty() {
        Ok(routes)
    } else {
        Err(problems)
    }
}

/// JSON if it looks like JSON (for JSON's clearer errors), YAML otherwise.
fn parse(text: &str) -> Result<Value, String> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))
    } else {
        yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))
    }
}

enum Version {
    Swagger2,
    OpenApi3,
}

fn version(doc: &Map<String, Value>) -> Result<Version, String> {
    // YAML reads an unquoted `2.0` or `3.0` as a number.
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    match (doc.get("swagger"), doc.get("openapi")) {
        (Some(v), _) if matches!(text(v).as_str(), "2.0" | "2") => Ok(Version::Swagger2),
        (Some(v), _) => Err(format!(
            "swagger {} is not supported: only \"2.0\" (or OpenAPI 3)",
            text(v)
        )),
        (None, Some(v)) if text(v) == "3" || text(v).starts_with("3.") => Ok(Version::OpenApi3),
        (None, Some(v)) => Err(format!(
            "openapi {} is not supported: only 3.x (or Swagger \"2.0\")",
            text(v)
        )),
        (None, None) => {
            Err("not an OpenAPI spec: neither `swagger: \"2.0\"` nor `openapi: 3.x` is set".into())
        }
    }
}

/// The path of OpenAPI 3's first server (`https://host/v1` → `/v1`), server variables
/// replaced by their defaults; empty without servers.
fn server_path(doc: &Map<String, Value>) -> Result<String, (String, String)> {
    let Some(servers) = doc.get("servers") else {
        return Ok(String::new());
    };
    let Some(servers) = servers.as_array() else {
        return Err((
            "servers".into(),
            format!("expected a list, found {}", kind(servers)),
        ));
    };
    let Some(server) = servers.first() else {
        return Ok(String::new());
    };
    let url = match server.get("url") {
        Some(Value::String(url)) => url,
        Some(v) => {
            return Err((
                "servers[0].url".into(),
                format!("expected a string, found {}", kind(v)),
            ))
        }
        None => return Err(("servers[0].url".into(), "required".into())),
    };
    // `{name}` takes the variable's default.
    let mut resolved = String::new();
    let mut rest = url.as_str();
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let var = &rest[open + 1..open + close];
        let default = server
            .get("variables")
            .and_then(|v| v.get(var))
            .and_then(|v| v.get("default"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                (
                    format!("servers[0].variables.{var}.default"),
                    format!("required: {url:?} uses {{{var}}}"),
                )
            })?;
        resolved.push_str(&rest[..open]);
        resolved.push_str(default);
        rest = &rest[open + close + 1..];
    }
    resolved.push_str(rest);
    // After `scheme://authority` (or `//authority`), or the whole of a relative URL.
    let path = match resolved.find("//") {
        Some(i) => {
            let after = &resolved[i + 2..];
            after.find('/').map_or("", |p| &after[p..])
        }
        None => resolved.as_str(),
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_end_matches('/');
    Ok(match path {
        "" => String::new(),
        p if p.starts_with('/') => p.into(),
        p => format!("/{p}"),
    })
}

/// The route for one operation.
fn route(
    at: &str,
    method: &str,
    path: &str,
    op: &Map<String, Value>,
) -> Result<RouteSpec, Vec<Problem>> {
    let mut problems = Vec::new();

    let mut exact = Vec::new();
    let mut ranges = Vec::new();
    match op.get("responses") {
        None => {}
        Some(Value::Object(responses)) => {
            for code in responses.keys() {
                if code == "default" || code.starts_with("x-") {
                    continue;
                }
                match status(code) {
                    Some((min, max)) if min == max => exact.push(min),
                    Some(range) => ranges.push(range),
                    None => fail(
                        &mut problems,
                        format!("{at}.responses[{code:?}]"),
                        "not a status code (100 to 599), a range such as 5XX, or default".into(),
                    ),
                }
            }
        }
        Some(v) => fail(
            &mut problems,
            format!("{at}.responses"),
            format!("expected an object, found {}", kind(v)),
        ),
    }
    exact.sort_unstable();
    ranges.sort_unstable();
    let response_classes = exact
        .into_iter()
        .map(|c| (c, c))
        .chain(ranges)
        .map(|(min, max)| ResponseClassSpec {
            condition: Some(ResponseMatchSpec {
                status: Some(StatusRangeSpec {
                    min: Some(min),
                    max: Some(max),
                }),
                ..ResponseMatchSpec::default()
            }),
            is_failure: min >= 500,
        })
        .collect();

    let extension = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| op.get(*n).map(|v| (format!("{at}.{n}"), v)))
    };
    let is_retryable = match extension(&["x-mesh-retryable", "x-linkerd-retryable"]) {
        None => false,
        Some((_, Value::Bool(b))) => *b,
        Some((path, v)) => {
            fail(
                &mut problems,
                path,
                format!("expected true or false, found {}", kind(v)),
            );
            false
        }
    };
    let timeout = match extension(&["x-mesh-timeout", "x-linkerd-timeout"]) {
        None => None,
        Some((path, Value::String(t))) => match duration::parse(t) {
            Ok(d) if d.is_zero() => {
                fail(&mut problems, path, "must be more than zero".into());
                None
            }
            Ok(_) => Some(t.trim().to_string()),
            Err(e) => {
                fail(&mut problems, path, e);
                None
            }
        },
        Some((path, v)) => {
            fail(
                &mut problems,
                path,
                format!(
                    "expected a Go duration such as \"500ms\", found {}",
                    kind(v)
                ),
            );
            None
        }
    };
    let max_retries = match extension(&["x-mesh-max-retries"]) {
        None => None,
        Some((path, v)) => match v.as_u64().map(u32::try_from) {
            Some(Ok(n)) => Some(n),
            _ => {
                fail(
                    &mut problems,
                    path,
                    format!("expected a whole number from 0 to {}, found {v}", u32::MAX),
                );
                None
            }
        },
    };

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(RouteSpec {
        name: format!("{method} {path}"),
        condition: Some(RequestMatchSpec {
            all: Some(vec![
                RequestMatchSpec {
                    method: Some(method.into()),
                    ..RequestMatchSpec::default()
                },
                RequestMatchSpec {
                    path_regex: Some(path_regex(path)),
                    ..RequestMatchSpec::default()
                },
            ]),
            ..RequestMatchSpec::default()
        }),
        response_classes,
        is_retryable,
        timeout,
        max_retries,
    })
}

/// `"404"` → 404..=404, `"5XX"` → 500..=599.
fn status(code: &str) -> Option<(i64, i64)> {
    let valid = |c: i64| (100..=599).contains(&c).then_some(c);
    if let Some(hundreds) = code.strip_suffix("XX").or_else(|| code.strip_suffix("xx")) {
        let h: i64 = hundreds.parse().ok().filter(|h| (1..=5).contains(h))?;
        return Some((h * 100, h * 100 + 99));
    }
    if code.len() != 3 {
        return None;
    }
    let c = valid(code.parse().ok()?)?;
    Some((c, c))
}

/// The regex for a templated path: `{param}` matches one segment, all else literally.
/// It is unanchored, as every pathRegex: the one rule (`mesh_api::path_regex`) makes
/// it match the whole path.
fn path_regex(path: &str) -> String {
    let mut re = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        re.push_str(&regex::escape(&rest[..open]));
        re.push_str("[^/]*");
        rest = &rest[open + close + 1..];
    }
    re.push_str(&regex::escape(rest));
    re
}

/// A JSON value's kind, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn fail(problems: &mut Vec<Problem>, path: String, reason: String) {
    problems.push(Problem { path, reason });
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_regexes() {
        assert_eq!(path_regex("/books/{id}"), "/books/[^/]*");
        assert_eq!(
            path_regex("/v1.2/{a}/x+y/{b}.json"),
            r"/v1\.2/[^/]*/x\+y/[^/]*\.json"
        );
        assert_eq!(path_regex("/odd/{open"), r"/odd/\{open");
        let re = mesh_api::path_regex::compile(&path_regex("/a/{id}/b")).unwrap();
        assert!(re.is_match("/a/42/b"));
        assert!(!re.is_match("/a/4/2/b"));
        assert!(!re.is_match("/x/a/42/b") && !re.is_match("/a/42/b/c"));
    }

    #[test]
    fn statuses() {
        assert_eq!(status("200"), Some((200, 200)));
        assert_eq!(status("5XX"), Some((500, 599)));
        for bad in ["600", "099", "20", "abc", "6XX", "2000", "+20"] {
            assert_eq!(status(bad), None, "{bad}");
        }
    }

    #[test]
    fn server_paths() {
        let path = |servers: Value| {
            let doc = serde_json::json!({ "servers": servers });
            server_path(doc.as_object().unwrap())
        };
        assert_eq!(path(serde_json::json!([])), Ok(String::new()));
        assert_eq!(
            path(serde_json::json!([{"url": "https://api.example.com/v1/"}])),
            Ok("/v1".into())
        );
        assert_eq!(
            path(serde_json::json!([{"url": "https://api.example.com"}])),
            Ok(String::new())
        );
        assert_eq!(
            path(serde_json::json!([{"url": "/api"}])),
            Ok("/api".into())
        );
        assert_eq!(
            path(serde_json::json!([{
                "url": "https://{host}/{base}",
                "variables": {"host": {"default": "x"}, "base": {"default": "v2"}}
            }])),
            Ok("/v2".into())
        );
        assert!(path(serde_json::json!([{"url": "/{base}"}])).is_err());
    }

    #[test]
    fn yaml_status_keys_may_be_numbers() {
        let routes = routes(
            "openapi: 3.0.0\npaths:\n  /x:\n    get:\n      responses:\n        200: {description: ok}\n        default: {description: err}\n",
        )
        .unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].response_classes.len(), 1);
    }

    #[test]
    fn every_problem_is_named() {
        let problems = routes(
            r#"{"swagger": "2.0", "basePath": "v1", "paths": {
                "/x": {"get": {"responses": {"abc": {}}, "x-mesh-timeout": "soon"}},
                "/y": {"put": {"x-linkerd-retryable": "yes"}},
                "z": {}
            }}"#,
        )
        .unwrap_err();
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("basePath: "), "{problems:#?}");
        assert!(problems[1].starts_with(r#"paths["/x"].get.responses["abc"]: "#));
        assert!(problems[2].starts_with(r#"paths["/x"].get.x-mesh-timeout: "#));
        assert!(problems[3].starts_with(r#"paths["/y"].put.x-linkerd-retryable: "#));
        assert!(problems[4].starts_with(r#"paths["z"]: "#));
    }
}
