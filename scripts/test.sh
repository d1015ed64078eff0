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
# load; promtool: metrics lint; tcpdump: debugging captures; nc: port probes; tmux: the
# pseudo-terminal `mesh top`'s tests and benchmark run it in; buildah: the images' build
# (`scripts/build-images.sh`, offline, FROM scratch); chromium: the headless browser the
# dashboard's pages are tested in (`cli/tests/it/browser.rs`).
missing=()
for tool in iptables ip curl nghttp h2load promtool tcpdump nc tmux buildah chromium; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing system packages (missing: ${missing[*]})"
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        iptables iproute2 curl nghttp2-client prometheus tcpdump netcat-openbsd tmux buildah \
        chromium
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

# --- manifests: checked against the official Kubernetes schemas ----------------------
# kubernetes-validate bundles the Kubernetes JSON schemas; --strict rejects unknown
# fields, so a misspelt key fails here rather than at `kubectl apply`. A quick look at
# the committed files against the oldest Kubernetes supported (1.31, Linkerd's minimum)
# and the newest the tool knows (its default); the tests check every rendering
# (`mesh install`, `--ha`, `--crds`, injected pods) against every version from 1.31 on
# (`mesh_kube_fake::schema`), and custom resources against their CRD's schema.
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
step "kubernetes-validate --strict manifests/"
python3 -m kubernetes_validate --strict --quiet --kubernetes-version 1.31.0 manifests/crds/*.yaml manifests/install.yaml
python3 -m kubernetes_validate --strict --quiet manifests/crds/*.yaml manifests/install.yaml

# --- build, format, lint ---------------------------------------------------------------
step "cargo build --workspace --bins --tests"
cargo build --workspace --bins --tests

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# --- tests ---------------------------------------------------------------------------
# The closing line is the runners' own counts, read back from their output and summed:
# `N passed, N failed, N skipped`, printed whether tests failed or not. Every runner runs
# to the end (--no-fail-fast), so the counts cover every test, and the script fails if a
# test failed, if a runner failed without a test failing (a crash, a build error), or,
# under CI, if a test was skipped: the pod tests mark themselves ignored unless run as
# root (integration-tests/tests/pod/main.rs), and CI must run them.
passed=0 failed=0 skipped=0
problems=()
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# A log without colour codes, which a runner may print even into a pipe.
plain() { sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$1"; }

# Runs a test command with its output shown and kept in $logs/$1; notes a failure
# instead of stopping the script, so that every runner's counts are read.
run_logged() {
    local name="$1"
    shift
    local status=0
    "$@" 2>&1 | tee "$logs/$name" || status=$?
    if [ "$status" -ne 0 ]; then problems+=("$* exited $status"); fi
}

# Adds up libtest's closing line of each test binary in log $1:
# `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
count_libtest() {
    local p f i
    read -r p f i < <(plain "$1" | awk '/^test result: / {
        for (n = 4; n < NF; n++) {
            if ($(n + 1) == "passed;") p += $n
            if ($(n + 1) == "failed;") f += $n
            if ($(n + 1) == "ignored;") i += $n
        }
    } END { print p + 0, f + 0, i + 0 }')
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + i))
}

# Adds up nextest's closing line in log $1, e.g.
#   Summary [ 300.1s] 387 tests run: 380 passed (2 slow, 1 flaky), 5 failed, 2 skipped
#   Summary [  15.7s] 8/10 tests run: 5 passed (1 leaky), 2 failed (1 due to being leaky),
#                     1 exec failed, 1 timed out, 2 skipped; cancelled due to interrupt
# Slow, flaky and leaky tests are among the passed; "failed", "exec failed" and "timed
# out" are failures; `8/10 tests run` means 2 never ran.
count_nextest() {
    local line n kind
    line="$(plain "$1" | grep -E '^ *Summary \[' | tail -n 1 || true)"
    if [ -z "$line" ]; then
        problems+=("nextest printed no Summary line: the run did not finish")
        return
    fi
    while read -r n kind; do
        case "$kind" in
            passed) passed=$((passed + n)) ;;
            failed | "exec failed" | "timed out") failed=$((failed + n)) ;;
            skipped) skipped=$((skipped + n)) ;;
            *) problems+=("nextest's Summary line has a count this script does not know: '$n $kind'") ;;
        esac
    done < <(printf '%s\n' "$line" | sed -E 's/.* run: //; s/;.*//; s/ \([^)]*\)//g' | tr ',' '\n')
    if [[ "$line" =~ ([0-9]+)/([0-9]+)\ tests?\ run: ]]; then
        problems+=("$((BASH_REMATCH[2] - BASH_REMATCH[1])) of ${BASH_REMATCH[2]} tests were not run")
    fi
}

if command -v cargo-nextest >/dev/null 2>&1; then
    # nextest does not run doctests; they go first so that nextest's summary comes last.
    step "cargo test --workspace --doc --no-fail-fast"
    run_logged doc cargo test --workspace --doc --no-fail-fast
    count_libtest "$logs/doc"
    step "cargo nextest run --workspace --no-fail-fast"
    run_logged nextest cargo nextest run --workspace --no-fail-fast
    count_nextest "$logs/nextest"
else
    step "cargo test --workspace --no-fail-fast"
    run_logged test cargo test --workspace --no-fail-fast
    count_libtest "$logs/test"
fi

if [ "$skipped" -gt 0 ]; then
    case "${CI:-}" in
        "" | false | 0)
            printf '\nwarning: %s test(s) skipped: the pod tests need root (network namespaces, iptables); run as root to run them\n' "$skipped" >&2
            ;;
        *)
            problems+=("$skipped test(s) skipped under CI, where every test must run: the pod tests need root (network namespaces, iptables)")
            ;;
    esac
fi
if [ "$failed" -gt 0 ]; then problems+=("$failed test(s) failed"); fi

if [ "${#problems[@]}" -eq 0 ]; then
    if [ -x scripts/fuzz-smoke.sh ]; then scripts/fuzz-smoke.sh; fi
    step "all checks passed: build, fmt, clippy, tests, fuzz"
else
    step "tests FAILED"
    printf '  %s\n' "${problems[@]}"
fi
# The plain closing line CI reads, from the runners' counts.
echo "$passed passed, $failed failed, $skipped skipped"
[ "${#problems[@]}" -eq 0 ]
