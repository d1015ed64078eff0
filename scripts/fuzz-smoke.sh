#!/usr/bin/env bash
# A short fuzz run of every mesh-proxy fuzz target (protocol detection, the HTTP/1
# server edge). cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the machine's one
# stable toolchain accept them. FUZZ_SECONDS sets the time per target (default 20).
set -euo pipefail
cd "$(dirname "$0")/../linkerd-like-proxy"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    printf '\n==> installing cargo-fuzz\n'
    cargo install cargo-fuzz --locked
fi

seconds="${FUZZ_SECONDS:-20}"
for target in $(cargo fuzz list); do
    printf '\n==> fuzzing %s for %ss\n' "$target" "$seconds"
    log="$(mktemp)"
    if RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
        tail -n 1 "$log"
        rm -f "$log"
    else
        # The crash report and the input that caused it are at the end.
        tail -n 80 "$log"
        echo "fuzz target $target failed; artifacts under linkerd-like-proxy/fuzz/artifacts/$target" >&2
        exit 1
    fi
done
