#!/usr/bin/env bash
# The discovery benchmark: mesh-controller indexing 1k services / 10k endpoints / 10k
# pods from a fake Kubernetes API server, with 2,000 destination streams open; endpoint
# changes timed to the streams and to a mesh-proxy routing by them; balancing with one
# slow replica of three. Everything runs on loopback; no root needed.
#
#   scripts/bench-discovery.sh                     # full run (~3 min): docs/bench/discovery-<date>.{md,json}
#   scripts/bench-discovery.sh --quick --no-write  # smoke run (~20 s), report on stderr only
#   scripts/bench-discovery.sh --help              # every flag
#
# Arguments go to `mesh-discovery-bench`; see bench/src/bin/mesh-discovery-bench/main.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p mesh-controller -p mesh-proxy -p mesh-bench \
    --bin mesh-controller --bin mesh-proxy --bin mesh-discovery-bench
exec target/release/mesh-discovery-bench "$@"
