//! The images, built offline by `scripts/build-images.sh` with buildah from this build's
//! binaries (`FROM scratch`: the binaries and the libraries they load): each runs as
//! the uid the manifests and the injector use, with the right entrypoint, and what it
//! holds runs on its own: the proxy image's `mesh-proxy init` installs its iptables
//! rules in a fresh network namespace with the image's own iptables, and the
//! controller image's binaries start.
//!
//! Needs root (network namespaces, chroot, buildah's storage) and buildah, which
//! `scripts/test.sh` installs; without either the test is compiled as ignored
//! (`cfg(no_buildah)`, `cli/build.rs`) and counted as skipped.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// A private buildah store under a temporary directory, removed (images, containers
/// and mounts) when dropped, and a network namespace deleted likewise.
struct Scratch {
    dir: tempfile::TempDir,
    netns: String,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tmpdir"),
            netns: format!("mesh-img-{}", std::process::id()),
        }
    }

    fn buildah_args(&self) -> Vec<String> {
        let root = self.dir.path().join("root");
        let run = self.dir.path().join("run");
        vec![
            "--root".into(),
            root.display().to_string(),
            "--runroot".into(),
            run.display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
        ]
    }

    fn buildah(&self, args: &[&str]) -> String {
        let out = Command::new("buildah")
            .args(self.buildah_args())
            .args(args)
            .output()
            .expect("buildah runs");
        ok(&out, &format!("buildah {args:?}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("buildah")
            .args(self.buildah_args())
            .args(["rm", "--all"])
            .output();
        let _ = Command::new("buildah")
            .args(self.buildah_args())
            .args(["rmi", "--all", "--force"])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .output();
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the CLI is in the workspace")
        .to_path_buf()
}

#[cfg_attr(
    no_buildah,
    ignore = "needs root and buildah (scripts/test.sh installs it)"
)]
#[test]
fn images_build_offline_and_run_as_the_manifests_say() {
    let scratch = Scratch::new();
    // This build's binaries: mesh beside mesh-proxy and mesh-controller.
    let bins = Path::new(env!("CARGO_BIN_EXE_mesh"))
        .parent()
        .expect("a directory");
    for bin in ["mesh-proxy", "mesh-controller"] {
        assert!(
            bins.join(bin).is_file(),
            "{bin} is not built: run `cargo build --bins` first"
        );
    }
    let out = Command::new(repo().join("scripts/build-images.sh"))
        .args(["--bin-dir", &bins.display().to_string()])
        .args(["--registry", "test.invalid/mesh", "--tag", "it"])
        .args([
            "--out",
            &scratch.dir.path().join("contexts").display().to_string(),
        ])
        .env("BUILDAH_ARGS", scratch.buildah_args().join(" "))
        .output()
        .expect("the script runs");
    ok(&out, "scripts/build-images.sh");

    let values = mesh_core::install::Values::default();
    for (image, uid, entrypoint) in [
        ("mesh-proxy", values.proxy.uid, "/usr/bin/mesh-proxy"),
        (
            "mesh-controller",
            values.controller.uid,
            "/usr/bin/mesh-controller",
        ),
    ] {
        let name = format!("test.invalid/mesh/{image}:it");
        let inspect: serde_json::Value =
            serde_json::from_str(&scratch.buildah(&["inspect", "--type", "image", &name]))
                .expect("buildah inspect prints JSON");
        let config = &inspect["OCIv1"]["config"];
        assert_eq!(
            config["User"],
            format!("{uid}:{uid}").as_str(),
            "{image}: the uid the manifests use"
        );
        assert_eq!(
            config["Entrypoint"],
            serde_json::json!([entrypoint]),
            "{image}"
        );
    }

    // The proxy image's init step, with the image's own iptables, in a namespace of
    // its own.
    let container = scratch.buildah(&["from", "test.invalid/mesh/mesh-proxy:it"]);
    let root = scratch.buildah(&["mount", container.trim()]);
    let root = root.trim();
    ok(
        &Command::new("ip")
            .args(["netns", "add", &scratch.netns])
            .output()
            .expect("ip runs"),
        "ip netns add",
    );
    ok(
        &Command::new("ip")
            .args(["netns", "exec", &scratch.netns, "chroot", root])
            .args(["/usr/bin/mesh-proxy", "init", "--proxy-uid", "2102"])
            .output()
            .expect("chroot runs"),
        "mesh-proxy init inside the image",
    );
    let rules = ok(
        &Command::new("ip")
            .args(["netns", "exec", &scratch.netns, "chroot", root])
            .args(["/usr/sbin/iptables", "-t", "nat", "-S"])
            .output()
            .expect("chroot runs"),
        "iptables -S inside the image",
    );
    assert!(
        rules.contains("-A MESH_PROXY_OUTPUT -m owner --uid-owner 2102 -j RETURN")
            && rules.contains("-j REDIRECT --to-ports 4143"),
        "the init step's rules: {rules}"
    );

    let container = scratch.buildah(&["from", "test.invalid/mesh/mesh-controller:it"]);
    let root = scratch.buildah(&["mount", container.trim()]);
    for bin in ["/usr/bin/mesh-controller", "/usr/bin/mesh"] {
        let version = ok(
            &Command::new("chroot")
                .args([root.trim(), bin, "--version"])
                .output()
                .expect("chroot runs"),
            bin,
        );
        assert!(
            version.contains(mesh_core::install::VERSION),
            "{bin}: {version}"
        );
    }
}
