#!/usr/bin/env bash
# Alternates the proxy before (a4b6363) and after the re-cut under the same harness and
# controller, mTLS, short runs. The builds are `cargo build --profile dist -p
# mesh-proxy` of each commit, copied to /work/bins/{before,after}/mesh-proxy (the file
# must be named mesh-proxy).
#   run.sh both 1 2   # runs 1 and 2: h1 and h2, 1000 rps (2 rounds) and max throughput
#   run.sh h1 3 4     # runs 3 and 4: h1 only, 1000 rps (3 rounds) and max throughput
set -u
cd /work/main
mode=$1; shift
case $mode in
  both) protos=h1,h2; rounds=2; order="before after" ;;
  h1) protos=h1; rounds=3; order="after before" ;;
  *) echo "usage: run.sh both|h1 RUN..." >&2; exit 64 ;;
esac
for i in "$@"; do
  for which in $order; do
    echo "=== run $i $which $(date +%T)"
    /work/bench-target/release/mesh-bench run --mtls \
      --proxy-bin /work/bins/$which/mesh-proxy \
      --controller-bin /work/bench-target/release/mesh-controller \
      --protos $protos --rates 1000 --rounds $rounds --duration 5s --warmup 1s \
      --max-duration 5s --max-warmup 1s --max-rounds 2 \
      --connect-rounds 0 --idle-conns 0 --no-write > /work/benchruns/$which-$i.txt 2>&1
    echo "exit $?"
  done
done
