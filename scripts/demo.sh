#!/usr/bin/env bash
# Builds the proxy, the controller and the CLI in release mode and runs `mesh demo` with the given flags,
# e.g. `scripts/demo.sh --rps 50 --duration 1m`. Ctrl-C stops it cleanly.
set -euo pipefail

cd "$(dirname "$0")/.."

cargo build --release -p mesh-proxy -p mesh-controller -p mesh-cli
# `mesh` finds `mesh-proxy` and `mesh-controller` next to itself in target/release.
exec target/release/mesh demo "$@"
