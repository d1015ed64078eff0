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
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds" 2>&1 | tail -n 3
    # `tail` hides libFuzzer's exit status; pipefail brings it back.
done
