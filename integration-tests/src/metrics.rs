//! Reading a proxy's `/metrics`: samples (parsed by the one Prometheus text parser,
//! `mesh_api::prom`), sums over label subsets, and a `promtool` check of the
//! exposition.
//!
//! ```
//! use mesh_integration_tests::Metrics;
//!
//! let m = Metrics::parse(r#"
//! request_total{direction="outbound",target_addr="198.18.1.2:8080",tls="no_identity"} 7
//! request_total{direction="outbound",target_addr="198.18.1.2:8080",tls="true"} 3
//! "#).unwrap();
//! assert_eq!(m.sum("request_total", &[("direction", "outbound"), ("target_addr", "198.18.1.2:8080")]), 10.0);
//! ```

use std::{
    collections::BTreeMap,
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition, with its text kept for messages and `promtool`.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Metrics {
    /// Parses the Prometheus text exposition format (comments and `# TYPE`/`# HELP` lines
    /// are skipped; timestamps ignored). Fails on any malformed sample line, naming it.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let samples = mesh_api::prom::parse(text).map_err(|e| {
            let line = text
                .lines()
                .nth(e.line.saturating_sub(1))
                .unwrap_or_default();
            anyhow::anyhow!("metrics {e}: {line:?}")
        })?;
        Ok(Self {
            samples: samples
                .into_iter()
                .map(|s| Sample {
                    name: s.name,
                    labels: s.labels.into_iter().collect(),
                    value: s.value,
                })
                .collect(),
            text: text.to_string(),
        })
    }

    /// Samples named `name` whose labels include every `(key, value)` of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the samples [`matching`](Self::matching) `name` and `labels` (0 if none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The matching samples as text, one per line, for assertion messages.
    pub fn show(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let lines: Vec<String> = self
            .matching(name, labels)
            .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
            .collect();
        if lines.is_empty() {
            format!("(no {name} samples with {labels:?})")
        } else {
            lines.join("\n")
        }
    }
}

/// Pipes `text` through `promtool check metrics` and fails unless it is clean.
///
/// One lint is accepted: "metric names should not contain abbreviated units" on `*_ms`
/// names. mesh keeps Linkerd's metric names (`response_latency_ms`, ...) on purpose, so
/// existing dashboards and queries work (see DESIGN.md, Metrics). promtool exits 1 on
/// parse errors and 3 on lint problems; every other problem fails the check.
pub fn promtool_check(text: &str) -> anyhow::Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (is the prometheus package installed?)")?;
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(text.as_bytes())
        .context("writing to promtool")?;
    let out = child.wait_with_output().context("waiting for promtool")?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Ok(()),
        Some(3) => {
            let problems: Vec<&str> = report
                .lines()
                .filter(|l| !l.trim().is_empty())
                .filter(|l| !is_accepted_lint(l))
                .collect();
            if problems.is_empty() {
                Ok(())
            } else {
                bail!(
                    "promtool check metrics found problems:\n{}",
                    problems.join("\n")
                )
            }
        }
        _ => bail!("promtool check metrics failed ({}):\n{report}", out.status),
    }
}

fn is_accepted_lint(line: &str) -> bool {
    line.split_once(' ').is_some_and(|(name, problem)| {
        name.ends_with("_ms") && problem == "metric names should not contain abbreviated units"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_special_values() {
        let m = Metrics::parse(concat!(
            "# HELP x a help\n",
            "# TYPE x counter\n",
            "x_total 3\n",
            "x_total{a=\"1\", b=\"q\\\"\\\\\\n,}\"} 4 1700000000000\n",
            "h_bucket{le=\"+Inf\"} 5\n",
            "g NaN\n",
            "g{} -Inf\n",
        ))
        .unwrap();
        assert_eq!(m.samples.len(), 5);
        assert_eq!(m.samples[1].labels["b"], "q\"\\\n,}");
        assert_eq!(m.sum("x_total", &[]), 7.0);
        assert_eq!(m.sum("x_total", &[("a", "1")]), 4.0);
        assert_eq!(m.sum("x_total", &[("a", "2")]), 0.0);
        assert_eq!(m.sum("h_bucket", &[("le", "+Inf")]), 5.0);
        assert!(m.samples[3].value.is_nan());
        assert_eq!(m.samples[4].value, f64::NEG_INFINITY);
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "x{a=1} 1",
            "x{a=\"1\" 1",
            "x{a=\"1\",a=\"2\"} 1",
            "x",
            "x one",
            "x 1 2 3",
            "x{a=\"\\q\"} 1",
        ] {
            assert!(Metrics::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn accepts_only_the_linkerd_unit_lint() {
        assert!(is_accepted_lint(
            "response_latency_ms metric names should not contain abbreviated units"
        ));
        assert!(!is_accepted_lint("request_total no help text"));
        assert!(!is_accepted_lint(
            "foo counter metrics should have \"_total\" suffix"
        ));
    }
}
