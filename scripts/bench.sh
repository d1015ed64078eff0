#!/usr/bin/env bash
# The end-to-end proxy benchmark: the same load over a direct connection and through an
# outbound + inbound mesh-proxy pair (network namespaces, iptables redirection), HTTP/1.1
# and HTTP/2, at fixed rates and at maximum throughput. Needs root.
#
#   sudo scripts/bench.sh                  # full run (~17 min): docs/bench/proxy-<date>.{md,json}
#   sudo scripts/bench.sh --mtls           # the same with mutual TLS between the proxies
#                                          # (mesh-controller serves identity and discovery):
#                                          # docs/bench/proxy-mtls-<date>.{md,json}
#   sudo scripts/bench.sh --duration 2s --warmup 1s --max-duration 3s --no-write   # quick look
#   sudo scripts/bench.sh --help           # every flag
#
# Every run also measures new opaque TCP connections per second through the pair
# (--connect-rounds; with --mtls each is a TLS handshake between the proxies) and the
# proxies' RSS per open idle connection (--idle-conns). With --mtls the run fails unless
# both proxies' metrics show all the traffic between them as tls="true".
#
# Arguments go to `mesh-bench run`; see bench/src/bin/mesh-bench/main.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "bench.sh: needs root (network namespaces, iptables, setpriv)" >&2
    exit 1
fi

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v setpriv >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo build --release -p mesh-controller -p mesh-bench \
    --bin mesh-controller --bin mesh-bench
# The proxy as it ships (profile `dist`: fat LTO, one codegen unit), on its own: built
# with the others, Cargo would unify its dependencies' features with theirs (ring,
# x509 signature checks) into a bigger binary than ships.
cargo build --profile dist -p mesh-proxy --bin mesh-proxy
proxy=(--proxy-bin target/dist/mesh-proxy)
for arg in "$@"; do
    # A proxy given on the command line (another build, another profile) wins.
    if [[ $arg == --proxy-bin || $arg == --proxy-bin=* ]]; then proxy=(); fi
done
exec target/release/mesh-bench run "${proxy[@]}" "$@"
