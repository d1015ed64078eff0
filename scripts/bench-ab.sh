#!/usr/bin/env bash
# Runs mesh-bench over two proxy builds, A and B, alternating them run by run so that
# drift on the machine hits both: mTLS, HTTP/1.1 and HTTP/2, 1000 rps (2 rounds of 5 s)
# and maximum throughput (2 rounds). Each run's report goes to OUT/NAME-N.md; then
# `docs/bench/recut-final-2026-12-07/summarize.py OUT/*.md` tabulates them (B over A).
#
#   sudo scripts/bench-ab.sh OUT NAME_A DIR_A NAME_B DIR_B RUN...
#
# BENCH_ARGS_A and BENCH_ARGS_B add mesh-bench flags to one side only, e.g. the same
# binary on both sides with BENCH_ARGS_B="--tap-with target/release/mesh" for tap's cost
# with one subscriber.
#
# DIR_x holds a binary named `mesh-proxy` (mesh-bench checks the process name), e.g. a
# `cargo build --profile dist -p mesh-proxy` of each commit. The harness and the
# controller are the release builds in $BENCH_BIN (default target/release):
# `cargo build --release -p mesh-bench -p mesh-controller`.
set -u
if [ $# -lt 6 ]; then
  sed -n '2,16p' "$0" >&2
  exit 64
fi
out=$1 name_a=$2 dir_a=$3 name_b=$4 dir_b=$5
shift 5
bin=${BENCH_BIN:-target/release}
mkdir -p "$out"
for i in "$@"; do
  for pair in "$name_a:$dir_a" "$name_b:$dir_b"; do
    name=${pair%%:*} dir=${pair#*:}
    if [ "$name" = "$name_a" ]; then extra=${BENCH_ARGS_A:-}; else extra=${BENCH_ARGS_B:-}; fi
    echo "=== run $i $name $(date +%T)"
    "$bin/mesh-bench" run --mtls \
      --proxy-bin "$dir/mesh-proxy" \
      --controller-bin "$bin/mesh-controller" \
      --protos h1,h2 --rates 1000 --rounds 2 --duration 5s --warmup 1s \
      --max-duration 5s --max-warmup 1s --max-rounds 2 \
      --connect-rounds 0 --idle-conns 0 --no-write $extra > "$out/$name-$i.md" 2>&1
    echo "exit $?"
  done
done
