#!/usr/bin/env bash
# Issue 11's closing comparison: the proxy before the re-cut (a4b6363) and after it
# (1e3ea01), `dist` builds (`cargo build --profile dist -p mesh-proxy` of each commit,
# copied to /work/bins/{before,after-s}/mesh-proxy), alternating, by
# scripts/bench-ab.sh with the harness and controller in /work/bench-target/release.
#   run.sh 1 2 3
# Then: summarize.py before-*.md after-s-*.md; micro.py micro-*.txt for the
# micro-benchmarks.
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.." && BENCH_BIN=/work/bench-target/release exec scripts/bench-ab.sh \
  "$here" before /work/bins/before after-s /work/bins/after-s "$@"
