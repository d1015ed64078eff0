//! A check's outcome and how the report shows it: grouped lines (`√`, `‼`, `×`, each
//! failure with its message, details and a hint line), or one JSON document.

use serde::Serialize;
use std::fmt::Write as _;

/// Where each check is explained, by its ID as the anchor. One place, so that the
/// hints follow the docs when they move.
pub(crate) const DOCS: &str = "docs/checks.md";

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Success,
    /// Worth fixing; does not fail the run.
    Warning,
    Error,
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Check {
    /// Stable: the docs anchor, the JSON's `id`.
    pub(crate) id: &'static str,
    pub(crate) description: &'static str,
    pub(crate) result: Verdict,
    /// What failed and what to run, when it did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// The docs anchor, when it did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hint: Option<String>,
    /// One line per object at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) details: Vec<String>,
    /// Whether waiting may mend it (`--wait`).
    #[serde(skip)]
    retry: bool,
}

impl Check {
    pub(crate) fn ok(id: &'static str, description: &'static str) -> Self {
        Self {
            id,
            description,
            result: Verdict::Success,
            error: None,
            hint: None,
            details: Vec::new(),
            retry: false,
        }
    }

    pub(crate) fn error(id: &'static str, description: &'static str, why: String) -> Self {
        Self {
            result: Verdict::Error,
            error: Some(why),
            hint: Some(format!("see {DOCS}#{id} for hints")),
            ..Self::ok(id, description)
        }
    }

    pub(crate) fn warning(id: &'static str, description: &'static str, why: String) -> Self {
        Self {
            result: Verdict::Warning,
            ..Self::error(id, description, why)
        }
    }

    /// `Ok(())` passes, `Err(why)` fails.
    pub(crate) fn from(
        id: &'static str,
        description: &'static str,
        result: Result<(), String>,
    ) -> Self {
        match result {
            Ok(()) => Self::ok(id, description),
            Err(why) => Self::error(id, description, why),
        }
    }

    pub(crate) fn details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// Marks a check that waiting may mend.
    pub(crate) fn retryable(mut self) -> Self {
        self.retry = true;
        self
    }

    pub(crate) fn wants_retry(&self) -> bool {
        self.retry && self.result == Verdict::Error
    }
}

/// A titled group of checks.
#[derive(Debug, Serialize)]
pub(crate) struct Category {
    pub(crate) name: &'static str,
    pub(crate) checks: Vec<Check>,
}

impl Category {
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            checks: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, check: Check) {
        self.checks.push(check);
    }
}

/// Whether no check failed (warnings pass).
pub(crate) fn success(categories: &[Category]) -> bool {
    categories
        .iter()
        .flat_map(|c| &c.checks)
        .all(|c| c.result != Verdict::Error)
}

/// The grouped lines, Linkerd's layout, ending with the overall status.
pub(crate) fn table(categories: &[Category]) -> String {
    let mut out = String::new();
    for category in categories {
        let _ = writeln!(
            out,
            "{}\n{}",
            category.name,
            "-".repeat(category.name.len())
        );
        for check in &category.checks {
            let mark = match check.result {
                Verdict::Success => "√",
                Verdict::Warning => "‼",
                Verdict::Error => "×",
            };
            let _ = writeln!(out, "{mark} {}", check.description);
            if let Some(error) = &check.error {
                let _ = writeln!(out, "    {error}");
            }
            for detail in &check.details {
                let _ = writeln!(out, "    {detail}");
            }
            if let Some(hint) = &check.hint {
                let _ = writeln!(out, "    {hint}");
            }
        }
        out.push('\n');
    }
    let mark = if success(categories) { "√" } else { "×" };
    let _ = writeln!(out, "Status check results are {mark}");
    out
}

/// The report as one JSON document: `{"success": .., "categories": [{"name": ..,
/// "checks": [{"id", "description", "result", "error"?, "hint"?, "details"?}]}]}`.
pub(crate) fn json(categories: &[Category]) -> String {
    let doc = serde_json::json!({
        "success": success(categories),
        "categories": categories,
    });
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_a_hint_and_warnings_do_not_fail() {
        let mut c = Category::new("mesh-identity");
        c.push(Check::ok("a", "first"));
        c.push(Check::warning("b", "second", "soon".into()));
        let cats = vec![c];
        assert!(success(&cats));
        let text = table(&cats);
        assert!(
            text.contains("√ first\n‼ second\n    soon\n    see docs/checks.md#b for hints\n"),
            "{text}"
        );
        assert!(text.ends_with("Status check results are √\n"), "{text}");
        let mut c = Category::new("x");
        c.push(Check::error("c", "third", "broken".into()).details(vec!["ns/a: why".into()]));
        let cats = vec![c];
        assert!(!success(&cats));
        let doc: serde_json::Value = serde_json::from_str(&json(&cats)).unwrap();
        assert_eq!(doc["success"], false);
        let check = &doc["categories"][0]["checks"][0];
        assert_eq!(check["id"], "c");
        assert_eq!(check["result"], "error");
        assert_eq!(check["hint"], "see docs/checks.md#c for hints");
        assert_eq!(check["details"][0], "ns/a: why");
    }
}
