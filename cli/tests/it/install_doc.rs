//! `docs/install.md`, run: every `mesh` command in its `sh` blocks, as written (the
//! `kubectl` side of a pipe left out, a `> file` kept), where this machine allows:
//! the offline commands as they are, `mesh inject -` fed a Deployment as `kubectl get
//! -o yaml` prints it, `mesh check --pre` against the in-process API server. The
//! commands that need a real cluster with a running controller are listed in
//! [`NEEDS_A_CLUSTER`]; a command the doc gains that is in neither group fails the
//! test, so the doc cannot drift from what is run.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

/// The doc's commands that need a cluster with the control plane running; each is
/// tested by its own command's tests against the fake API server and a controller.
const NEEDS_A_CLUSTER: &[&str] = &[
    "mesh check",
    "mesh check --proxy -n emojivoto",
    "mesh stat deploy -n emojivoto",
    "mesh edges deploy -n emojivoto",
    "mesh top deploy/web -n emojivoto",
    "mesh tap deploy/web -n emojivoto",
];

/// A Deployment as `kubectl get deploy -o yaml` prints one (a `List`).
const DEPLOYMENTS: &str = "apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata:
    name: web
    namespace: emojivoto
  spec:
    selector:
      matchLabels: {app: web}
    template:
      metadata:
        labels: {app: web}
      spec:
        containers:
        - name: web
          image: example.org/web:1
";

/// The `mesh` commands of the doc's `sh` blocks: each line's part from `mesh` to the
/// first pipe.
fn commands(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        for part in line.split('|') {
            let part = part.trim();
            if part.starts_with("mesh ") {
                out.push(part.to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_of_the_install_guide_runs() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/install.md"))
            .expect("docs/install.md");
    let commands = commands(&doc);
    assert!(commands.len() >= 10, "found {commands:?}");
    let api = mesh_kube_fake::FakeKube::start().await.expect("fake API");
    let tmp = tempfile::tempdir().expect("tmpdir");
    let mut ran = Vec::new();
    for command in &commands {
        if NEEDS_A_CLUSTER.contains(&command.as_str()) {
            continue;
        }
        // `> file` writes into the temporary directory.
        let (command_line, redirect) = match command.split_once('>') {
            Some((c, file)) => (c.trim(), Some(tmp.path().join(file.trim()))),
            None => (command.as_str(), None),
        };
        let words: Vec<&str> = command_line.split_whitespace().collect();
        let stdin = match words.get(1..3) {
            Some(["inject" | "uninject", "-"]) => Some(DEPLOYMENTS),
            _ => None,
        };
        let cluster = words.get(1) == Some(&"check");
        assert!(
            !cluster || words.contains(&"--pre"),
            "{command}: needs a cluster; add it to NEEDS_A_CLUSTER if it is right"
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh"));
        cmd.args(&words[1..])
            .env("KUBECONFIG", api.kubeconfig_path())
            .env_remove("MESH_LOG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("mesh runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        let out = child.wait_with_output().expect("mesh ends");
        assert!(
            out.status.success(),
            "{command}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(file) = redirect {
            std::fs::write(&file, &out.stdout).expect("write");
        }
        assert!(!out.stdout.is_empty(), "{command}: printed nothing");
        ran.push(command.clone());
    }
    let not_run: Vec<&String> = commands.iter().filter(|c| !ran.contains(c)).collect();
    assert_eq!(
        not_run.len(),
        NEEDS_A_CLUSTER.len(),
        "the doc's cluster commands changed: {not_run:?}"
    );
    for expected in [
        "mesh check --pre",
        "mesh install --crds",
        "mesh install",
        "mesh inject -",
        "mesh uninstall",
    ] {
        assert!(
            ran.iter().any(|c| c == expected),
            "{expected:?} was not run: {ran:?}"
        );
    }
}
