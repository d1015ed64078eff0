#!/usr/bin/env bash
# The one test command, for a fresh machine and for CI (`.ci/run` execs this):
# installs what the tests need if it is missing, builds everything, checks format and
# lints, runs every test (unit to pod level), then the fuzz smoke run if there is one.
set -euo pipefail

cd "$(dirname "$0")/.."

# Incremental compilation caches are only a cost on a one-off build: on a clean
# checkout they would add several gigabytes of disk for nothing.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

# --- system tools used by the pod tests and benchmarks --------------------------------
# iptables/iproute2: namespaces and redirection; curl, nghttp, h2load: HTTP clients and
# load; promtool: metrics lint; tcpdump: debugging captures; nc: port probes.
missing=()
for tool in iptables ip curl nghttp h2load promtool tcpdump nc; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing system packages (missing: ${missing[*]})"
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        iptables iproute2 curl nghttp2-client prometheus tcpdump netcat-openbsd
fi

# --- python packages for the gRPC and WebSocket helpers ------------------------------
if ! python3 -c 'import grpc, websockets' >/dev/null 2>&1; then
    step "installing python packages (grpcio, websockets)"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        $SUDO apt-get update
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-pip
    fi
    # A Debian system python refuses plain installs (PEP 668); a venv-less CI box is
    # exactly where overriding that is wanted.
    python3 -m pip install --quiet grpcio websockets ||
        python3 -m pip install --quiet --break-system-packages grpcio websockets
fi

# --- manifests: CRDs checked against the official Kubernetes schemas ------------------
# kubernetes-validate bundles the Kubernetes JSON schemas; --strict rejects unknown
# fields, so a misspelt CRD key fails here rather than at `kubectl apply`. Checked
# against the oldest Kubernetes supported (1.31, Linkerd's minimum) and the newest the
# tool knows (its default).
# Run as a module: pip may put the script where PATH does not look (~/.local/bin).
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
    step "installing python packages (kubernetes-validate)"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        $SUDO apt-get update
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-pip
    fi
    python3 -m pip install --quiet kubernetes-validate ||
        python3 -m pip install --quiet --break-system-packages kubernetes-validate
fi
step "kubernetes-validate --strict manifests/crds/*.yaml"
python3 -m kubernetes_validate --strict --kubernetes-version 1.31.0 manifests/crds/*.yaml
python3 -m kubernetes_validate --strict manifests/crds/*.yaml

# --- build, format, lint ---------------------------------------------------------------
step "cargo build --workspace --bins --tests"
cargo build --workspace --bins --tests

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# --- tests ---------------------------------------------------------------------------
if command -v cargo-nextest >/dev/null 2>&1; then
    # nextest does not run doctests; they go first so that nextest's summary is the
    # runner's closing line.
    step "cargo test --workspace --doc"
    cargo test --workspace --doc
    step "cargo nextest run --workspace"
    log="$(mktemp)"
    cargo nextest run --workspace 2>&1 | tee "$log"
    summary="$(grep -Eo '[0-9]+ tests? run: [0-9]+ passed' "$log" | tail -n 1)"
    rm -f "$log"
else
    step "cargo test --workspace"
    cargo test --workspace
    summary=""
fi

if [ -x scripts/fuzz-smoke.sh ]; then scripts/fuzz-smoke.sh; fi

step "all checks passed: build, fmt, clippy, tests, fuzz"
if [ -n "$summary" ]; then
    # The plain closing line CI reads: N passed, N failed.
    echo "${summary##*: }, 0 failed"
fi
