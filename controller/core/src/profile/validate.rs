//! Checks a [`ServiceProfileSpec`] and turns it into what the proxy receives. Every
//! problem is reported, each with its field path (`spec.routes[1].condition.pathRegex`)
//! and why; nothing invalid is silently dropped, and nothing is half-applied: a spec
//! with any problem yields no profile, so the last valid one stays in force.

use super::spec::*;
use mesh_api::{destination as api, duration, path_regex};
use std::{collections::HashMap, fmt, time::Duration};

/// Linkerd's defaults for a profile without `retryBudget`.
pub const DEFAULT_RETRY_RATIO: f32 = 0.2;
pub const DEFAULT_MIN_RETRIES_PER_SECOND: u32 = 10;
pub const DEFAULT_RETRY_TTL: Duration = Duration::from_secs(10);

/// One problem in a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Where, as `spec.routes[0].timeout`.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every problem found, one per line when displayed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Invalid>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A valid profile, as the destination service sends it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Validated {
    pub routes: Vec<api::Route>,
    pub retry_budget: api::RetryBudget,
    pub dst_overrides: Vec<api::WeightedDst>,
}

/// Checks a whole document: its name (`<svc>.<ns>.svc.<cluster-domain>`, when
/// `cluster_domain` is given) and its spec.
pub fn validate_document(
    profile: &ServiceProfile,
    cluster_domain: Option<&str>,
) -> Result<Validated, Problems> {
    let mut problems = Vec::new();
    if !profile.api_version.is_empty() && profile.api_version != super::API_VERSION {
        problems.push(Invalid {
            path: "apiVersion".into(),
            reason: format!(
                "expected {:?}, found {:?} (a Linkerd profile moves by changing only this)",
                super::API_VERSION,
                profile.api_version
            ),
        });
    }
    if !profile.kind.is_empty() && profile.kind != super::KIND {
        problems.push(Invalid {
            path: "kind".into(),
            reason: format!("expected {:?}, found {:?}", super::KIND, profile.kind),
        });
    }
    let namespace = profile.metadata.namespace.as_deref();
    if let Err(reason) = check_name(&profile.metadata.name, namespace, cluster_domain) {
        problems.push(Invalid {
            path: "metadata.name".into(),
            reason,
        });
    }
    match validate(&profile.spec) {
        Ok(v) if problems.is_empty() => Ok(v),
        Ok(_) => Err(Problems(problems)),
        Err(Problems(more)) => {
            problems.extend(more);
            Err(Problems(problems))
        }
    }
}

/// A profile is named after the service it describes: `<svc>.<ns>.svc.<cluster-domain>`,
/// and lives in that service's namespace (when the document says where it lives).
///
/// A profile in another namespace is refused, not ignored: Linkerd applies such a
/// profile to the clients in the profile's namespace (client-side profiles), which
/// mesh does not support, so accepting it would accept something that does nothing.
fn check_name(
    name: &str,
    namespace: Option<&str>,
    cluster_domain: Option<&str>,
) -> Result<(), String> {
    if name.is_empty() {
        return Err("required: the service's name, `<svc>.<ns>.svc.<cluster-domain>`".into());
    }
    if !mesh_api::names::is_dns_domain(name) {
        return Err(format!("{name:?} is not a DNS-1123 subdomain"));
    }
    let parts: Vec<&str> = name.splitn(4, '.').collect();
    let shaped = parts.len() == 4 && parts[2] == "svc";
    if let Some(cd) = cluster_domain {
        if !shaped || parts[3] != cd {
            return Err(format!(
                "{name:?} names no service: expected `<svc>.<ns>.svc.{cd}`"
            ));
        }
    }
    match namespace {
        Some(ns) if shaped && parts[1] != ns => Err(format!(
            "{name:?} names service {:?} of namespace {:?}, but the profile is in namespace {ns:?}: a ServiceProfile must live in its service's namespace (client-side profiles, applied to the clients of another namespace, are not supported); create it in namespace {:?}, or name a service of {ns:?}",
            parts[0], parts[1], parts[1]
        )),
        _ => Ok(()),
    }
}

/// Checks a spec; the proxy's form of it when it is valid, every problem otherwise.
pub fn validate(spec: &ServiceProfileSpec) -> Result<Validated, Problems> {
    let mut v = Checker::default();
    let routes: Vec<api::Route> = spec
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| v.route(&format!("spec.routes[{i}]"), r))
        .collect();
    let retry_budget = match &spec.retry_budget {
        None => Some(api::RetryBudget {
            retry_ratio: DEFAULT_RETRY_RATIO,
            min_retries_per_second: DEFAULT_MIN_RETRIES_PER_SECOND,
            ttl_ms: DEFAULT_RETRY_TTL.as_millis() as u64,
        }),
        Some(b) => v.budget("spec.retryBudget", b),
    };
    let dst_overrides: Vec<api::WeightedDst> = spec
        .dst_overrides
        .iter()
        .enumerate()
        .filter_map(|(i, d)| v.dst(&format!("spec.dstOverrides[{i}]"), d))
        .collect();
    if !spec.dst_overrides.is_empty()
        && dst_overrides.len() == spec.dst_overrides.len()
        && dst_overrides.iter().all(|d| d.weight == 0)
    {
        v.fail(
            "spec.dstOverrides",
            "every weight is zero: no traffic could go anywhere",
        );
    }
    match retry_budget {
        Some(retry_budget) if v.problems.is_empty() => Ok(Validated {
            routes,
            retry_budget,
            dst_overrides,
        }),
        _ => Err(Problems(v.problems)),
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Invalid>,
}

impl Checker {
    fn fail(&mut self, path: &str, reason: impl Into<String>) {
        self.problems.push(Invalid {
            path: path.to_string(),
            reason: reason.into(),
        });
    }

    fn route(&mut self, path: &str, r: &RouteSpec) -> Option<api::Route> {
        let before = self.problems.len();
        if r.name.trim().is_empty() {
            self.fail(
                &format!("{path}.name"),
                "required: the route's name (its `rt_route` label)",
            );
        }
        let condition = match &r.condition {
            None => {
                self.fail(
                    &format!("{path}.condition"),
                    "required: which requests the route matches",
                );
                None
            }
            Some(c) => self.request_match(&format!("{path}.condition"), c),
        };
        let response_classes: Vec<api::ResponseClass> = r
            .response_classes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let p = format!("{path}.responseClasses[{i}].condition");
                let condition = match &c.condition {
                    None => {
                        self.fail(&p, "required: which responses the class matches");
                        None
                    }
                    Some(m) => self.response_match(&p, m),
                }?;
                Some(api::ResponseClass {
                    condition: Some(condition),
                    is_failure: c.is_failure,
                })
            })
            .collect();
        let timeout_ms = match &r.timeout {
            None => 0,
            Some(t) => match duration::parse(t) {
                Ok(d) if d.is_zero() => {
                    self.fail(
                        &format!("{path}.timeout"),
                        "must be more than zero (leave it out for no timeout)",
                    );
                    0
                }
                Ok(d) => d.as_millis().max(1).min(u128::from(u64::MAX)) as u64,
                Err(e) => {
                    self.fail(&format!("{path}.timeout"), e);
                    0
                }
            },
        };
        if self.problems.len() != before {
            return None;
        }
        // `maxRetries: 0` means this route is never retried.
        let is_retryable = r.is_retryable && r.max_retries != Some(0);
        Some(api::Route {
            name: r.name.clone(),
            condition,
            response_classes,
            is_retryable,
            timeout_ms,
            max_retries: r.max_retries.unwrap_or(0),
            metrics_labels: HashMap::from([("route".to_string(), r.name.clone())]),
        })
    }

    fn request_match(&mut self, path: &str, m: &RequestMatchSpec) -> Option<api::RequestMatch> {
        use api::request_match::{Match, Seq};
        let mut parts: Vec<api::RequestMatch> = Vec::new();
        let before = self.problems.len();
        let mut push = |m: Match| parts.push(api::RequestMatch { r#match: Some(m) });
        if let Some(method) = &m.method {
            match http::Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes()) {
                Ok(me) if !method.trim().is_empty() => push(Match::Method(me.to_string())),
                _ => self.fail(
                    &format!("{path}.method"),
                    format!("{method:?} is not an HTTP method"),
                ),
            }
        }
        if let Some(re) = &m.path_regex {
            // The one rule (`mesh_api::path_regex`): the whole path, whatever anchors the
            // pattern has. It is sent as matched, `^(?:re)$`, so that what the proxy
            // receives means the same even read literally (wrapping again changes
            // nothing).
            match path_regex::compile(re) {
                Ok(_) => push(Match::PathRegex(path_regex::whole_path(re))),
                Err(e) => self.fail(&format!("{path}.pathRegex"), e.to_string()),
            }
        }
        let seq = |this: &mut Self, key: &str, list: &Option<Vec<RequestMatchSpec>>| {
            let list = list.as_ref()?;
            if list.is_empty() {
                this.fail(
                    &format!("{path}.{key}"),
                    "empty list: give at least one condition",
                );
                return None;
            }
            let matches: Vec<_> = list
                .iter()
                .enumerate()
                .filter_map(|(i, m)| this.request_match(&format!("{path}.{key}[{i}]"), m))
                .collect();
            (matches.len() == list.len()).then_some(Seq { matches })
        };
        let all = seq(self, "all", &m.all);
        let any = seq(self, "any", &m.any);
        let mut push = |m: Match| parts.push(api::RequestMatch { r#match: Some(m) });
        if let Some(s) = all {
            push(Match::All(s));
        }
        if let Some(s) = any {
            push(Match::Any(s));
        }
        if let Some(n) = &m.not {
            if let Some(inner) = self.request_match(&format!("{path}.not"), n) {
                push(Match::Not(Box::new(inner)));
            }
        }
        let set = [
            m.method.is_some(),
            m.path_regex.is_some(),
            m.all.is_some(),
            m.any.is_some(),
            m.not.is_some(),
        ];
        if !set.contains(&true) {
            self.fail(
                path,
                "empty condition: set one of method, pathRegex, all, any, not",
            );
        }
        if self.problems.len() != before {
            return None;
        }
        // Several fields at once must all hold, as Linkerd reads them.
        Some(if parts.len() == 1 {
            parts.pop()?
        } else {
            api::RequestMatch {
                r#match: Some(Match::All(Seq { matches: parts })),
            }
        })
    }

    fn response_match(&mut self, path: &str, m: &ResponseMatchSpec) -> Option<api::ResponseMatch> {
        use api::response_match::{Match, Seq};
        let before = self.problems.len();
        let mut parts: Vec<api::ResponseMatch> = Vec::new();
        if let Some(s) = &m.status {
            if let Some(range) = self.status(&format!("{path}.status"), s) {
                parts.push(api::ResponseMatch {
                    r#match: Some(Match::Status(range)),
                });
            }
        }
        for (key, list) in [("all", &m.all), ("any", &m.any)] {
            let Some(list) = list else { continue };
            if list.is_empty() {
                self.fail(
                    &format!("{path}.{key}"),
                    "empty list: give at least one condition",
                );
                continue;
            }
            let matches: Vec<_> = list
                .iter()
                .enumerate()
                .filter_map(|(i, m)| self.response_match(&format!("{path}.{key}[{i}]"), m))
                .collect();
            if matches.len() == list.len() {
                let seq = Seq { matches };
                parts.push(api::ResponseMatch {
                    r#match: Some(if key == "all" {
                        Match::All(seq)
                    } else {
                        Match::Any(seq)
                    }),
                });
            }
        }
        if let Some(n) = &m.not {
            if let Some(inner) = self.response_match(&format!("{path}.not"), n) {
                parts.push(api::ResponseMatch {
                    r#match: Some(Match::Not(Box::new(inner))),
                });
            }
        }
        if m.status.is_none() && m.all.is_none() && m.any.is_none() && m.not.is_none() {
            self.fail(path, "empty condition: set one of status, all, any, not");
        }
        if self.problems.len() != before {
            return None;
        }
        Some(if parts.len() == 1 {
            parts.pop()?
        } else {
            api::ResponseMatch {
                r#match: Some(Match::All(Seq { matches: parts })),
            }
        })
    }

    fn status(&mut self, path: &str, s: &StatusRangeSpec) -> Option<api::HttpStatusRange> {
        let before = self.problems.len();
        let bound = |this: &mut Self, key: &str, v: Option<i64>| -> u32 {
            match v {
                None => 0,
                Some(v) if (100..=599).contains(&v) => v as u32,
                Some(v) => {
                    this.fail(
                        &format!("{path}.{key}"),
                        format!("{v} is not an HTTP status (100 to 599)"),
                    );
                    0
                }
            }
        };
        let min = bound(self, "min", s.min);
        let max = bound(self, "max", s.max);
        if s.min.is_none() && s.max.is_none() {
            self.fail(path, "empty range: set min, max or both");
        }
        if min != 0 && max != 0 && min > max {
            self.fail(path, format!("min {min} is greater than max {max}"));
        }
        (self.problems.len() == before).then_some(api::HttpStatusRange { min, max })
    }

    fn budget(&mut self, path: &str, b: &RetryBudgetSpec) -> Option<api::RetryBudget> {
        let before = self.problems.len();
        let ratio = match b.retry_ratio {
            None => {
                self.fail(
                    &format!("{path}.retryRatio"),
                    "required when retryBudget is set (Linkerd's default is 0.2)",
                );
                0.0
            }
            Some(r) if r.is_finite() && (0.0..=1000.0).contains(&r) => r,
            Some(r) => {
                self.fail(
                    &format!("{path}.retryRatio"),
                    format!("{r} is out of range (0 to 1000)"),
                );
                0.0
            }
        };
        let min = match b.min_retries_per_second {
            None => {
                self.fail(
                    &format!("{path}.minRetriesPerSecond"),
                    "required when retryBudget is set (Linkerd's default is 10)",
                );
                0
            }
            Some(m) => match u32::try_from(m) {
                Ok(m) => m,
                Err(_) => {
                    self.fail(
                        &format!("{path}.minRetriesPerSecond"),
                        format!("{m} is out of range (0 to {})", u32::MAX),
                    );
                    0
                }
            },
        };
        let ttl = match &b.ttl {
            None => {
                self.fail(
                    &format!("{path}.ttl"),
                    "required when retryBudget is set (Linkerd's default is 10s)",
                );
                Duration::ZERO
            }
            Some(t) => match duration::parse(t) {
                Ok(d) if (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&d) => d,
                Ok(_) => {
                    self.fail(
                        &format!("{path}.ttl"),
                        format!("{t:?} is out of range (1s to 60s)"),
                    );
                    Duration::ZERO
                }
                Err(e) => {
                    self.fail(&format!("{path}.ttl"), e);
                    Duration::ZERO
                }
            },
        };
        (self.problems.len() == before).then_some(api::RetryBudget {
            retry_ratio: ratio as f32,
            min_retries_per_second: min,
            ttl_ms: ttl.as_millis() as u64,
        })
    }

    fn dst(&mut self, path: &str, d: &WeightedDstSpec) -> Option<api::WeightedDst> {
        let before = self.problems.len();
        let authority = d.authority.trim();
        if authority.is_empty() {
            self.fail(
                &format!("{path}.authority"),
                "required: `<svc>.<ns>.svc.<cluster-domain>[:port]`",
            );
        } else if authority.parse::<http::uri::Authority>().is_err() || authority.contains('@') {
            self.fail(
                &format!("{path}.authority"),
                format!("{authority:?} is not a host[:port]"),
            );
        }
        let weight = match &d.weight {
            None => {
                self.fail(&format!("{path}.weight"), "required");
                0
            }
            Some(q) => match decimillis(q) {
                Ok(w) => w,
                Err(e) => {
                    self.fail(&format!("{path}.weight"), e);
                    0
                }
            },
        };
        (self.problems.len() == before).then(|| api::WeightedDst {
            authority: authority.to_string(),
            weight,
        })
    }
}

/// A weight in ten-thousandths (Linkerd's `MilliValue() × 10`): `1` → 10000,
/// `"500m"` → 5000, `"0.5"` → 5000.
///
/// What the CRD's schema takes, and no more: an integer, or a string in Kubernetes'
/// quantity grammar (the schema's `pattern`, [`QUANTITY_PATTERN`]); negative weights,
/// which the schema cannot refuse, are refused here.
fn decimillis(q: &Quantity) -> Result<u32, String> {
    let milli = match q {
        Quantity::Integer(n) if *n < 0 => return Err(format!("{n} must be zero or more")),
        Quantity::Integer(n) => *n as f64 * 1000.0,
        Quantity::String(s) => quantity_milli(s)?,
    };
    let w = (milli * 10.0).round();
    if !w.is_finite() || w > f64::from(u32::MAX) {
        return Err(format!(
            "{} is too large (at most {})",
            match q {
                Quantity::Integer(n) => n.to_string(),
                Quantity::String(s) => format!("{s:?}"),
            },
            u32::MAX / 10_000
        ));
    }
    Ok(w as u32)
}

/// The quantity grammar the CRD's schema checks weights' strings with (Kubernetes'
/// own, as controller-gen writes it, less the minus sign and with whole exponents):
/// kept equal to [`quantity_milli`]'s, which a test checks against it.
pub const QUANTITY_PATTERN: &str =
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$";

/// A quantity string's value in thousandths ([`crate::quantity::parse`]).
fn quantity_milli(s: &str) -> Result<f64, String> {
    crate::quantity::parse(s).map(|v| v * 1000.0)
}
