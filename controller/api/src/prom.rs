//! The one parser of the Prometheus text exposition format (version 0.0.4), for
//! everything that reads what the proxies and the controller expose on `/metrics`:
//! the controller's metrics API, the tests and the benchmarks.
//!
//! ```
//! let samples = mesh_api::prom::parse(
//!     "# TYPE request_total counter\nrequest_total{direction=\"outbound\",tls=\"true\"} 3\n",
//! )
//! .unwrap();
//! assert_eq!(samples[0].label("tls"), Some("true"));
//! assert_eq!(samples[0].value, 3.0);
//! assert!(mesh_api::prom::parse("<html>502</html>").is_err());
//! ```
//!
//! It accepts what a conforming exporter writes (comments, labels with escaped quotes,
//! backslashes and newlines, `+Inf`, `-Inf`, `NaN`, an optional timestamp) and rejects
//! anything else with the line number and the reason, so a page that is not metrics at
//! all (an HTML error page, a truncated body) is reported rather than read as zeros. It
//! never panics, whatever the input.
//!
//! It lives here, beside the other formats both sides must read alike, so that every
//! reader can depend on it without tonic or hyper (`default-features = false`), and so
//! that the binaries, which only write the format, do not carry it. The one rule
//! writers share, escaping a label value, is here too ([`write_label`]), beside the
//! reading it must agree with.

use std::fmt;

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written; names are unique within a sample.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Why a page could not be parsed: the 1-based line and what was wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

// === impl Sample ===

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole page; comments (`# HELP`, `# TYPE`, others) and blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|reason| ParseError {
            line: i + 1,
            reason,
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let mut cur = Cursor { rest: line };
    let name = cur
        .take_name(true)
        .ok_or_else(|| format!("expected a metric name at {:?}", truncate(line)))?;
    let mut labels: Vec<(String, String)> = Vec::new();
    if cur.eat('{') {
        loop {
            cur.skip_space();
            if cur.eat('}') {
                break;
            }
            let label = cur
                .take_name(false)
                .ok_or_else(|| format!("expected a label name in {name}"))?;
            cur.skip_space();
            if !cur.eat('=') {
                return Err(format!("expected '=' after label {label} in {name}"));
            }
            cur.skip_space();
            let value = cur
                .take_quoted()
                .map_err(|e| format!("label {label}: {e}"))?;
            if labels.iter().any(|(n, _)| *n == label) {
                return Err(format!("label {label} appears twice in {name}"));
            }
            labels.push((label, value));
            cur.skip_space();
            if cur.eat(',') {
                continue;
            }
            if cur.eat('}') {
                break;
            }
            return Err(format!("expected ',' or '}}' after label in {name}"));
        }
    }
    if !cur.skip_space() {
        return Err(format!("expected a space before the value of {name}"));
    }
    let value = cur.take_word();
    let value = parse_value(value)
        .ok_or_else(|| format!("value {:?} of {name} is not a number", truncate(value)))?;
    cur.skip_space();
    let timestamp = cur.take_word();
    if !timestamp.is_empty() && timestamp.parse::<i64>().is_err() {
        return Err(format!(
            "timestamp {:?} of {name} is not an integer",
            truncate(timestamp)
        ));
    }
    cur.skip_space();
    if !cur.rest.is_empty() {
        return Err(format!(
            "unexpected {:?} after the sample {name}",
            truncate(cur.rest)
        ));
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// A float as Prometheus writes it; Go's spellings of the specials only.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        // Rust would also take "inf", "infinity" and "nan" in any case; Prometheus does
        // not write them, so a word made of letters is rejected.
        _ if s.is_empty()
            || s.bytes()
                .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') =>
        {
            None
        }
        _ => s.parse().ok(),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The unparsed rest of a line.
struct Cursor<'a> {
    rest: &'a str,
}

impl Cursor<'_> {
    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// Skips spaces and tabs; whether there were any.
    fn skip_space(&mut self) -> bool {
        let trimmed = self.rest.trim_start_matches([' ', '\t']);
        let skipped = trimmed.len() != self.rest.len();
        self.rest = trimmed;
        skipped
    }

    /// A metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or, without colons, a label name.
    fn take_name(&mut self, colons: bool) -> Option<String> {
        let ok = |c: char, first: bool| {
            c.is_ascii_alphabetic()
                || c == '_'
                || (colons && c == ':')
                || (!first && c.is_ascii_digit())
        };
        let mut chars = self.rest.char_indices();
        match chars.next() {
            Some((_, c)) if ok(c, true) => {}
            _ => return None,
        }
        let end = chars
            .find(|&(_, c)| !ok(c, false))
            .map_or(self.rest.len(), |(i, _)| i);
        let (name, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(name.to_string())
    }

    /// A double-quoted label value with `\\`, `\"` and `\n` escapes.
    fn take_quoted(&mut self) -> Result<String, String> {
        if !self.eat('"') {
            return Err("expected a quoted value".into());
        }
        let mut value = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[i + 1..];
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => return Err(format!("unknown escape \\{other}")),
                    None => break,
                },
                c => value.push(c),
            }
        }
        Err("unterminated quoted value".into())
    }

    /// Everything up to the next space or tab.
    fn take_word(&mut self) -> &str {
        let end = self.rest.find([' ', '\t']).unwrap_or(self.rest.len());
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        word
    }
}

/// Appends `name="value"` to `out`, the value escaped as the format requires
/// (`\\`, `\"`, `\n`): what [`parse`] reads back as `value`. Separators are the
/// caller's.
pub fn write_label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Sample {
        let mut samples = parse(line).expect("parses");
        assert_eq!(samples.len(), 1, "{line}");
        samples.remove(0)
    }

    #[test]
    fn parses_what_the_proxy_writes() {
        let text = "# HELP route_request_total Total count of HTTP requests.\n\
                    # TYPE route_request_total counter\n\
                    route_request_total{direction=\"outbound\",dst=\"web.demo.svc.cluster.local:80\",rt_route=\"GET /api/list\"} 55\n\
                    \n\
                    route_response_latency_ms_bucket{status_code=\"200\",le=\"+Inf\"} 12\n\
                    process_start_time_seconds 1.7e9\n";
        let samples = parse(text).expect("parses");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "route_request_total");
        assert_eq!(samples[0].label("rt_route"), Some("GET /api/list"));
        assert_eq!(
            samples[0].label("dst"),
            Some("web.demo.svc.cluster.local:80")
        );
        assert_eq!(samples[0].value, 55.0);
        assert_eq!(samples[1].label("le"), Some("+Inf"));
        assert!(samples[2].labels.is_empty());
        assert_eq!(samples[2].value, 1.7e9);
    }

    #[test]
    fn parses_escapes_specials_and_timestamps() {
        let s = one(r#"m{a="say \"hi\"",b="back\\slash",c="new\nline",} NaN 1700000000000"#);
        assert_eq!(s.label("a"), Some("say \"hi\""));
        assert_eq!(s.label("b"), Some("back\\slash"));
        assert_eq!(s.label("c"), Some("new\nline"));
        assert!(s.value.is_nan());
        assert_eq!(one("m +Inf").value, f64::INFINITY);
        assert_eq!(one("m -Inf").value, f64::NEG_INFINITY);
        assert_eq!(one("m{} -1.5e-3").value, -1.5e-3);
        assert_eq!(one("m{ a = \"x\" , b=\"{}\" }\t2").label("b"), Some("{}"));
        assert_eq!(one("a:b_c 1").name, "a:b_c");
    }

    #[test]
    fn rejects_garbage_with_the_line() {
        let bad = [
            "<html><body>502 Bad Gateway</body></html>",
            "m",
            "m{",
            "m{a} 1",
            "m{a=} 1",
            "m{a=\"x} 1",
            "m{a=\"x\\",
            "m{a=\"\\t\"} 1",
            "m{a=\"x\"b=\"y\"} 1",
            "m{a=\"x\",a=\"y\"} 1",
            "m{1a=\"x\"} 1",
            "m{a=\"x\"}1",
            "m one",
            "m inf",
            "m nan",
            "m 1 2 3",
            "m 1 1.5",
            "1m 1",
            "{a=\"x\"} 1",
            "m{a:b=\"x\"} 1",
            "m\u{0} 1",
            "é 1",
            "m{é=\"x\"} 1",
        ];
        for line in bad {
            let text = format!("# ok\nok 1\n{line}\n");
            let err = parse(&text).expect_err(line);
            assert_eq!(err.line, 3, "{line}: {err}");
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every prefix of tricky lines, and byte soup.
        let seeds = [
            r#"m{a="say \"hi\"",b="é\\",} NaN 17"#,
            "m{a=\"\u{1F600}\"} +Inf",
            "\u{FEFF}m 1",
        ];
        for seed in seeds {
            for (i, _) in seed.char_indices() {
                let _ = parse(&seed[..i]);
                let _ = parse(&seed[i..]);
            }
        }
        const ALPHABET: &[u8] = b"m{}=\"\\, 1e+InfNa\n#\t";
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..40)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    ALPHABET[(x >> 16) as usize % ALPHABET.len()]
                })
                .collect();
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn written_labels_read_back_as_written() {
        let value = "a \\ b \" c\nd";
        let mut line = String::from("m{");
        write_label(&mut line, "k", value);
        line.push_str("} 1\n");
        assert_eq!(line, "m{k=\"a \\\\ b \\\" c\\nd\"} 1\n");
        assert_eq!(parse(&line).unwrap()[0].label("k"), Some(value));
    }
}
