//! Tells the tests which of the tools they drive are on this machine, so that a test
//! whose tool is missing is compiled as ignored and counted as skipped, visibly, instead
//! of passing without having run. `scripts/test.sh` installs both before it builds, so
//! CI runs every test.
//!
//! - tmux: the pseudo-terminal `mesh top`'s tests run it in (`cfg(no_tmux)`);
//! - PyPI's kubernetes-validate: the official Kubernetes schemas the manifests are
//!   checked against (`cfg(no_kubernetes_validate)`);
//! - buildah, and root: the images' build and run (`cfg(no_buildah)`);
//! - chromium: the headless browser the dashboard's pages are tested in
//!   (`cfg(no_chromium)`, `tests/it/browser.rs`).

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_tmux)");
    println!("cargo::rustc-check-cfg=cfg(no_kubernetes_validate)");
    println!("cargo::rustc-check-cfg=cfg(no_buildah)");
    println!("cargo::rustc-check-cfg=cfg(no_chromium)");
    println!("cargo::rerun-if-env-changed=PATH");
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tmux"))
            .find(|path| path.is_file())
    });
    let mut missing = false;
    match found {
        // Built again if tmux goes away or changes.
        Some(path) => println!("cargo::rerun-if-changed={}", path.display()),
        None => {
            missing = true;
            println!("cargo::rustc-cfg=no_tmux");
        }
    }
    // Where python finds the package; built again when it appears, changes or goes.
    let validator = Command::new("python3")
        .args([
            "-c",
            "import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match validator {
        Some(dir) => println!("cargo::rerun-if-changed={dir}"),
        None => {
            missing = true;
            println!("cargo::rustc-cfg=no_kubernetes_validate");
        }
    }
    let buildah = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("buildah"))
            .find(|path| path.is_file())
    });
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    match buildah {
        Some(path) if root => println!("cargo::rerun-if-changed={}", path.display()),
        _ => {
            missing = true;
            println!("cargo::rustc-cfg=no_buildah");
        }
    }
    let chromium = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|path| path.is_file())
    });
    match chromium {
        Some(path) => println!("cargo::rerun-if-changed={}", path.display()),
        None => {
            missing = true;
            println!("cargo::rustc-cfg=no_chromium");
        }
    }
    if missing {
        // A path that never exists makes cargo run this again at every build, so
        // installing a tool is noticed (an installed file keeps its package's old
        // modification time, which cargo would take as unchanged).
        println!("cargo::rerun-if-changed=.no-tool-probe-again");
    }
}
