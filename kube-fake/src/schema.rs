//! The official Kubernetes JSON schemas, as the API server would judge a manifest:
//! [`validate`] runs `kubernetes-validate --strict` (PyPI's `kubernetes-validate`,
//! which ships the schemas of every Kubernetes version) on YAML documents, for each
//! [`SUPPORTED_VERSIONS`] entry. `--strict` rejects unknown fields, which the
//! non-strict schemas let pass (a misspelled `readinessProbe` would be accepted and
//! ignored).
//!
//! The tool checks built-in kinds only: a custom resource is reported as unknown and
//! skipped by it, so custom resources are checked against their CRD's own schema by
//! the tests that make them.

use std::{io::Write as _, process::Command};

/// The Kubernetes versions the manifests are checked against: the oldest the mesh
/// supports (`mesh_core::install::MIN_KUBERNETES`, which this crate does not depend
/// on) to the newest the tool knows.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0",
];

/// Whether `python3 -m kubernetes_validate` runs here (`scripts/test.sh` installs it).
pub fn validator_available() -> bool {
    Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Validates YAML `documents` (one or many, `---`-separated) against every supported
/// version's strict schemas. `Err` holds the tool's own words for each version that
/// refused them, or why the tool could not run.
pub fn validate(documents: &str) -> Result<(), String> {
    let mut file = tempfile_in_tmp()?;
    file.1
        .write_all(documents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", file.0.display()))?;
    let path = file.0.clone();
    let mut failures = Vec::new();
    for version in SUPPORTED_VERSIONS {
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
            .args(["--kubernetes-version", version])
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run python3 -m kubernetes_validate: {e}"))?;
        if !out.status.success() {
            failures.push(format!(
                "Kubernetes {version}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let _ = std::fs::remove_file(&path);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// A new file under the temporary directory, removed by [`validate`] when done.
fn tempfile_in_tmp() -> Result<(std::path::PathBuf, std::fs::File), String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "mesh-kube-validate-{}-{}.yaml",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::File::create(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    Ok((path, file))
}
