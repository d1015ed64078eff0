#!/usr/bin/env bash
# Builds the three binaries `mesh demo` runs (mesh, mesh-proxy, mesh-controller) and
# runs `mesh demo` with the given flags, e.g. `scripts/demo.sh --rps 50 --duration 1m`.
# Ctrl-C (or closing the terminal) stops it and everything it started.
#
# The binaries are built with the `demo` profile (Cargo.toml): optimized, but without
# the shipping proxy's whole-program LTO, which would make a first build several times
# longer for no visible difference in a demo.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "demo.sh: cargo not found; install Rust from https://rustup.rs" >&2
    exit 1
fi

if [ ! -x target/demo/mesh ] || [ ! -x target/demo/mesh-proxy ] || [ ! -x target/demo/mesh-controller ]; then
    cat >&2 <<'MSG'
==> First build of mesh, mesh-proxy and mesh-controller (cargo profile `demo`).
    It compiles about 360 crates: about 3 minutes on 2 cores (plus their download on
    a fresh machine). Later runs only rebuild what changed, in seconds.
MSG
else
    echo "==> Building mesh, mesh-proxy and mesh-controller (cargo profile \`demo\`)" >&2
fi
cargo build --profile demo --bin mesh --bin mesh-proxy --bin mesh-controller
# `mesh` finds `mesh-proxy` and `mesh-controller` next to itself, in target/demo.
exec target/demo/mesh demo "$@"
