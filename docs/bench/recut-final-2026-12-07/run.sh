#!/usr/bin/env bash
# Issue 11's closing comparison: the proxy before the re-cut (a4b6363) and after it
# (the final commit), `dist` builds, under the same harness and controller, mTLS,
# alternating so that drift on the machine hits both. The builds are
# `cargo build --profile dist -p mesh-proxy` of each commit, copied to
# /work/bins/{before,after-s}/mesh-proxy (the file must be named mesh-proxy).
#   run.sh 1 2 3     # runs 1, 2, 3: h1 and h2, 1000 rps (2 rounds) and max throughput
# Then: summarize.py *.md > ../recut-final-2026-12-07.md's tables.
set -u
here=$(cd "$(dirname "$0")" && pwd)
for i in "$@"; do
  for which in before after-s; do
    echo "=== run $i $which $(date +%T)"
    /work/bench-target/release/mesh-bench run --mtls \
      --proxy-bin /work/bins/$which/mesh-proxy \
      --controller-bin /work/bench-target/release/mesh-controller \
      --protos h1,h2 --rates 1000 --rounds 2 --duration 5s --warmup 1s \
      --max-duration 5s --max-warmup 1s --max-rounds 2 \
      --connect-rounds 0 --idle-conns 0 --no-write > "$here/$which-$i.md" 2>&1
    echo "exit $?"
  done
done
