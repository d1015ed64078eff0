//! Reading a proxy's `/metrics`: a small parser of the Prometheus text format into
//! samples, sums over label subsets, and a `promtool` check of the exposition.
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
    /// are skipped; timestamps ignored). Fails on any malformed sample line.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample =
                parse_line(line).with_context(|| format!("metrics line {}: {line:?}", i + 1))?;
            samples.push(sample);
        }
        Ok(Self {
            samples,
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

fn parse_line(line: &str) -> anyhow::Result<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .context("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        bail!("invalid metric name {name:?}");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().context("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().with_context(|| format!("invalid value {v:?}"))?,
    };
    // An optional timestamp may follow; anything beyond that is an error.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .with_context(|| format!("invalid timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        bail!("trailing garbage");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",...}` (the opening brace already consumed) and returns what follows.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> anyhow::Result<&'a str> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').context("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("invalid label name {key:?}");
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').context("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    other => bail!("invalid escape in label value: {other:?}"),
                },
                Some((_, c)) => value.push(c),
                None => bail!("unterminated label value"),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            bail!("duplicate label {key:?}");
        }
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            bail!("expected ',' or '}}' after label {key:?}");
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
