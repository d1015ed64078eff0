//! Label and field selectors, parsed as the API server parses them.
//!
//! The grammar is apimachinery's (`k8s.io/apimachinery/pkg/labels` and `pkg/fields`), so
//! a selector kube-rs builds from a `Selector` or a string means here what it means in a
//! cluster. A selector the API server would reject is rejected with the same 400, rather
//! than silently matching everything.

use std::collections::BTreeMap;

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LabelSelector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    DoesNotExist(String),
    /// `=`, `==` and `in`.
    In(String, Vec<String>),
    /// `!=` and `notin`: also true when the label is absent, as in Kubernetes.
    NotIn(String, Vec<String>),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

impl LabelSelector {
    pub(super) fn parse(s: &str) -> Result<Self, String> {
        let tokens = lex(s)?;
        let mut reqs = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let (req, next) = requirement(&tokens, i)?;
            reqs.push(req);
            i = next;
            match tokens.get(i) {
                None => {}
                Some(Tok::Comma) if i + 1 < tokens.len() => i += 1,
                Some(t) => return Err(format!("found '{t}', expected: ','")),
            }
        }
        Ok(Self(reqs))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|req| match req {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::GreaterThan(k, n) => int_label(labels, k).is_some_and(|v| v > *n),
            Requirement::LessThan(k, n) => int_label(labels, k).is_some_and(|v| v < *n),
        })
    }
}

fn int_label(labels: &BTreeMap<String, String>, key: &str) -> Option<i64> {
    labels.get(key).and_then(|v| v.parse().ok())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Comma,
    Open,
    Close,
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tok::Ident(s) => s,
            Tok::Comma => ",",
            Tok::Open => "(",
            Tok::Close => ")",
            Tok::Not => "!",
            Tok::Eq => "=",
            Tok::DoubleEq => "==",
            Tok::NotEq => "!=",
            Tok::Gt => ">",
            Tok::Lt => "<",
        })
    }
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let tok = match c {
            c if c.is_whitespace() => continue,
            ',' => Tok::Comma,
            '(' => Tok::Open,
            ')' => Tok::Close,
            '>' => Tok::Gt,
            '<' => Tok::Lt,
            '!' if chars.peek() == Some(&'=') => {
                chars.next();
                Tok::NotEq
            }
            '!' => Tok::Not,
            '=' if chars.peek() == Some(&'=') => {
                chars.next();
                Tok::DoubleEq
            }
            '=' => Tok::Eq,
            c => {
                let mut ident = String::from(c);
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || ",()!=<>".contains(c) {
                        break;
                    }
                    ident.push(c);
                    chars.next();
                }
                Tok::Ident(ident)
            }
        };
        out.push(tok);
    }
    Ok(out)
}

/// Parses one requirement starting at `tokens[i]`; returns it and the index after it.
fn requirement(tokens: &[Tok], i: usize) -> Result<(Requirement, usize), String> {
    let ident = |j: usize| match tokens.get(j) {
        Some(Tok::Ident(s)) => Ok(s.clone()),
        Some(t) => Err(format!("found '{t}', expected: identifier")),
        None => Err("found end of string, expected: identifier".to_owned()),
    };
    if tokens[i] == Tok::Not {
        let key = ident(i + 1)?;
        return Ok((Requirement::DoesNotExist(key), i + 2));
    }
    let key = ident(i)?;
    // A value may be empty (`a=` selects labels set to ""), so a missing identifier after
    // an equality operator is the empty string.
    let value = |j: usize| match tokens.get(j) {
        Some(Tok::Ident(s)) => (s.clone(), j + 1),
        _ => (String::new(), j),
    };
    match tokens.get(i + 1) {
        None | Some(Tok::Comma) => Ok((Requirement::Exists(key), i + 1)),
        Some(Tok::Eq | Tok::DoubleEq) => {
            let (v, next) = value(i + 2);
            Ok((Requirement::In(key, vec![v]), next))
        }
        Some(Tok::NotEq) => {
            let (v, next) = value(i + 2);
            Ok((Requirement::NotIn(key, vec![v]), next))
        }
        Some(op @ (Tok::Gt | Tok::Lt)) => {
            let n = ident(i + 2)?;
            let n = n.parse().map_err(|_| {
                format!("for 'Gt', 'Lt' operators, the value must be an integer: {n}")
            })?;
            let req = if *op == Tok::Gt {
                Requirement::GreaterThan(key, n)
            } else {
                Requirement::LessThan(key, n)
            };
            Ok((req, i + 3))
        }
        Some(Tok::Ident(op)) if op == "in" || op == "notin" => {
            if tokens.get(i + 2) != Some(&Tok::Open) {
                return Err("found end of set, expected: '('".to_owned());
            }
            let mut values = Vec::new();
            let mut j = i + 3;
            loop {
                match tokens.get(j) {
                    Some(Tok::Ident(v)) => {
                        values.push(v.clone());
                        j += 1;
                    }
                    // An empty value inside a set, as in `in (a,)`.
                    Some(Tok::Comma | Tok::Close) => values.push(String::new()),
                    Some(t) => {
                        return Err(format!("found '{t}', expected: ',', ')' or identifier"))
                    }
                    None => return Err("found end of string, expected: ')'".to_owned()),
                }
                match tokens.get(j) {
                    Some(Tok::Comma) => j += 1,
                    Some(Tok::Close) => break,
                    Some(t) => return Err(format!("found '{t}', expected: ',' or ')'")),
                    None => return Err("found end of string, expected: ')'".to_owned()),
                }
            }
            let req = if op == "in" {
                Requirement::In(key, values)
            } else {
                Requirement::NotIn(key, values)
            };
            Ok((req, j + 1))
        }
        Some(t) => Err(format!(
            "found '{t}', expected: in, notin, =, ==, !=, gt, lt"
        )),
    }
}

/// A parsed `fieldSelector`: `field=value`, `field==value` or `field!=value` terms, comma
/// separated, with `\,`, `\=` and `\\` escapes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct FieldSelector(Vec<FieldTerm>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FieldTerm {
    pub(super) field: String,
    pub(super) value: String,
    pub(super) equal: bool,
}

impl FieldSelector {
    /// Parses `s`, rejecting fields not in `supported` as the API server does.
    pub(super) fn parse(s: &str, supported: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in split_unescaped(s, ',') {
            if term.is_empty() {
                continue;
            }
            let (field, value, equal) = if let Some(at) = find_unescaped(&term, "!=") {
                (&term[..at], &term[at + 2..], false)
            } else if let Some(at) = find_unescaped(&term, "==") {
                (&term[..at], &term[at + 2..], true)
            } else if let Some(at) = find_unescaped(&term, "=") {
                (&term[..at], &term[at + 1..], true)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push(FieldTerm {
                field: field.to_owned(),
                value: unescape(value),
                equal,
            });
        }
        Ok(Self(terms))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn terms(&self) -> &[FieldTerm] {
        &self.0
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        let last = parts.last_mut().expect("parts starts non-empty");
        if escaped {
            last.push('\\');
            last.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
        } else {
            last.push(c);
        }
    }
    parts
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_match_as_in_kubernetes() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("gen", "3")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app!=web", false),
            ("missing!=x", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app in (web, api)", true),
            ("app in (api)", false),
            ("app notin (api)", true),
            ("missing notin (api)", true),
            ("gen>2", true),
            ("gen<3", false),
            (" app = web , tier in (front) ", true),
            ("example.com/role=", false),
        ];
        for (sel, want) in cases {
            let parsed = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
            assert_eq!(parsed.matches(&web), want, "{sel:?}");
        }
        let empty_value = labels(&[("example.com/role", "")]);
        assert!(LabelSelector::parse("example.com/role=")
            .unwrap()
            .matches(&empty_value));
    }

    #[test]
    fn malformed_label_selectors_are_rejected() {
        for sel in [
            "app in web",
            "app in (web",
            "a=b,",
            ",a=b",
            "=b",
            "a>b",
            "a b",
        ] {
            assert!(
                LabelSelector::parse(sel).is_err(),
                "{sel:?} should not parse"
            );
        }
    }

    #[test]
    fn field_selectors_parse_escapes_and_reject_unknown_fields() {
        let supported = ["metadata.name", "metadata.namespace"];
        let sel =
            FieldSelector::parse(r"metadata.name=a\,b,metadata.namespace!=x", &supported).unwrap();
        assert_eq!(
            sel.terms(),
            [
                FieldTerm {
                    field: "metadata.name".into(),
                    value: "a,b".into(),
                    equal: true
                },
                FieldTerm {
                    field: "metadata.namespace".into(),
                    value: "x".into(),
                    equal: false
                },
            ]
        );
        let err = FieldSelector::parse("spec.nope=1", &supported).unwrap_err();
        assert_eq!(err, "field label not supported: spec.nope");
    }
}
