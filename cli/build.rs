//! Tells the tests whether tmux is on this machine: without it the tests that run
//! `mesh top` in a pseudo-terminal are compiled as ignored (`cfg(no_tmux)`), so the
//! runners count them as skipped, visibly, instead of passing without having run.
//! `scripts/test.sh` installs tmux before it builds, so CI runs them.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_tmux)");
    println!("cargo::rerun-if-env-changed=PATH");
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tmux"))
            .find(|path| path.is_file())
    });
    match found {
        // Built again if tmux goes away or changes.
        Some(path) => println!("cargo::rerun-if-changed={}", path.display()),
        None => {
            // A path that never exists makes cargo run this again at every build, so
            // installing tmux is noticed (an installed file keeps its package's old
            // modification time, which cargo would take as unchanged).
            println!("cargo::rerun-if-changed=.no-tmux-probe-again");
            println!("cargo::rustc-cfg=no_tmux");
        }
    }
}
