//! A check's outcome and how the report shows it: grouped lines (`√`, `‼`, `×`, each
//! failure with its message, details and a hint line), or one JSON document.

use std::fmt::Write as _;

pub(crate) use mesh_core::health::{success, Category, Check, Verdict};

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

pub(crate) use mesh_core::health::json;

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
