//! `mesh profile validate`: the controller's checks over every ServiceProfile in a
//! file, each problem printed as `FILE: document N (NAME): FIELD: REASON`.
//!
//! A file may hold several YAML documents (`---`), as `kubectl apply -f` takes them;
//! documents of another kind (a Service next to its profile) are skipped and said so.
//! Each document is parsed on its own, padded so that line numbers in YAML errors are
//! the file's, not the document's.

use super::Input;
use mesh_core::{
    profile::{self, Problems},
    yaml,
};
use std::io::Write;

/// Checks every input; an error (exit 1) when any profile is invalid or there is none.
pub(super) fn run(
    inputs: &[Input],
    cluster_domain: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    report(inputs, out, "ServiceProfile", |doc| {
        check(doc, cluster_domain)
    })
}

/// Checks every document of every input with `check`, printing a line per document
/// (per problem, for an invalid one) as `FILE: document N (LABEL): ...`; an error
/// (exit 1) when any document is invalid or none is valid, naming them by `noun`.
/// What `mesh profile validate` and `mesh policy validate` share.
pub(crate) fn report(
    inputs: &[Input],
    out: &mut impl Write,
    noun: &str,
    check: impl Fn(&str) -> Outcome,
) -> anyhow::Result<()> {
    let (mut valid, mut invalid) = (0usize, 0usize);
    for input in inputs {
        let text = input.read()?;
        for (number, doc) in documents(&text).into_iter().enumerate() {
            let number = number + 1;
            match check(&doc) {
                Outcome::Empty => {}
                Outcome::Skipped { label, why } => {
                    writeln!(out, "{input}: document {number} ({label}): skipped, {why}")?
                }
                Outcome::Valid { label, what } => {
                    valid += 1;
                    writeln!(out, "{input}: document {number} ({label}): valid, {what}")?;
                }
                Outcome::Invalid { label, problems } => {
                    invalid += 1;
                    for p in problems.0 {
                        writeln!(out, "{input}: document {number} ({label}): {p}")?;
                    }
                }
            }
        }
    }
    out.flush()?;
    match (valid, invalid) {
        (0, 0) => anyhow::bail!("no {noun} found"),
        (_, 0) => Ok(()),
        (valid, invalid) => {
            let total = valid + invalid;
            anyhow::bail!("{invalid} of {total} {noun}s invalid")
        }
    }
}

/// What one document came to.
pub(crate) enum Outcome {
    /// Nothing but blank lines and comments.
    Empty,
    /// Of another kind: `why` says so.
    Skipped {
        label: String,
        why: String,
    },
    /// `what` summarizes it.
    Valid {
        label: String,
        what: String,
    },
    Invalid {
        label: String,
        problems: Problems,
    },
}

fn check(doc: &str, cluster_domain: &str) -> Outcome {
    // A first, schema-less read finds the kind and the name for the report; the
    // controller's parse then finds the problems (YAML syntax included).
    let value: Option<serde_json::Value> = yaml::from_str(doc).ok();
    let str_at = |keys: &[&str]| {
        let mut v = value.as_ref()?;
        for k in keys {
            v = v.get(k)?;
        }
        v.as_str().map(str::to_string)
    };
    if matches!(value, Some(serde_json::Value::Null)) {
        return Outcome::Empty;
    }
    let name = str_at(&["metadata", "name"]).unwrap_or_else(|| "no name".into());
    match str_at(&["kind"]) {
        Some(kind) if kind != profile::KIND => {
            return Outcome::Skipped {
                label: format!("{kind} {name}"),
                why: "not a ServiceProfile".into(),
            }
        }
        _ => {}
    }
    match profile::parse_yaml(doc, Some(cluster_domain)) {
        Ok(v) => {
            let routes = v.routes.len();
            let s = if routes == 1 { "" } else { "s" };
            Outcome::Valid {
                label: name,
                what: format!("{routes} route{s}"),
            }
        }
        Err(problems) => Outcome::Invalid {
            label: name,
            problems,
        },
    }
}

/// Splits a YAML stream at its `---` (and `...`) markers. Each document keeps its place:
/// the lines before it become blank lines and the marker becomes spaces, so a YAML
/// error's line and column are the file's.
/// The documents of a YAML stream, each padded with the lines before it so that
/// errors name the file's lines (`mesh inject` splits alike).
pub(crate) fn documents(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let marker = ["---", "..."].into_iter().find(|m| {
            line.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        });
        match marker {
            Some(m) => {
                docs.push(std::mem::take(&mut current));
                current = "\n".repeat(i);
                // Content after `--- ` belongs to the new document (`--- # comment`).
                if m == "---" {
                    current.push_str("   ");
                    current.push_str(&line[3..]);
                }
                current.push('\n');
            }
            None => {
                current.push_str(line);
                current.push('\n');
            }
        }
    }
    docs.push(current);
    // Empty documents (a leading `---`, a trailing one) count for nothing.
    docs.retain(|d| {
        d.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        })
    });
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_lines() {
        let docs = documents("---\na: 1\n---\n# only a comment\n---   \nb: 2\n...\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], "   \na: 1\n");
        assert_eq!(docs[1], "\n\n\n\n      \nb: 2\n");
        assert_eq!(documents("a: 1\n--- # x\nb: 2").len(), 2);
        // `---` inside a value is not a marker.
        assert_eq!(documents("a: |\n  ---x\nb: '--- '\n").len(), 1);
    }

    #[test]
    fn yaml_errors_name_the_files_line() {
        let text = "kind: Service\nmetadata: {name: web}\n---\nmetadata:\n  name: [\n";
        let docs = documents(text);
        let Outcome::Invalid { problems, .. } = check(&docs[1], "cluster.local") else {
            panic!("the second document is broken")
        };
        assert!(problems.0[0].reason.contains("line 5"), "{problems}");
        assert!(matches!(
            check(&docs[0], "cluster.local"),
            Outcome::Skipped { .. }
        ));
    }
}
