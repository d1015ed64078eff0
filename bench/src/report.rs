//! What both benchmarks' reports share: units, the line saying what made them, and
//! writing the Markdown report with its raw numbers beside it.

use anyhow::Context as _;
use serde::Serialize;
use std::path::Path;

/// KiB as MB (10^6 bytes).
pub fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// The report's first paragraph after its title: the command, the commit and how long
/// the run took.
pub fn made_by(command: &str, git: &str, elapsed_s: f64) -> String {
    format!("Made by `{command}` at commit {git} in {elapsed_s:.0} s.\n")
}

/// Writes `<dir>/<name>.md` (the report) and `<dir>/<name>.json` (every number it was
/// made from), and says so on stderr after `who: `.
pub fn write(
    who: &str,
    dir: &Path,
    name: &str,
    markdown: &str,
    results: &impl Serialize,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let md = dir.join(format!("{name}.md"));
    let json = dir.join(format!("{name}.json"));
    std::fs::write(&md, markdown).with_context(|| format!("writing {}", md.display()))?;
    std::fs::write(&json, serde_json::to_string_pretty(results)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    eprintln!("{who}: wrote {} and {}", md.display(), json.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_report_and_its_numbers() {
        let dir = std::env::temp_dir().join(format!("mesh-bench-report-{}", std::process::id()));
        write(
            "test",
            &dir,
            "r",
            "# report\n",
            &serde_json::json!({"a": 1}),
        )
        .unwrap();
        let md = std::fs::read_to_string(dir.join("r.md")).unwrap();
        let json = std::fs::read_to_string(dir.join("r.json")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(md, "# report\n");
        assert_eq!(json, "{\n  \"a\": 1\n}\n");
        assert!((mb(1000) - 1.024).abs() < 1e-12);
        assert_eq!(
            made_by("x", "abc", 12.4),
            "Made by `x` at commit abc in 12 s.\n"
        );
    }
}
