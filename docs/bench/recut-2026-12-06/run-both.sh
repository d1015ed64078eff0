#!/usr/bin/env bash
# Alternates the proxy before (a4b6363) and after (HEAD) the re-cut, same harness,
# same controller: short mTLS runs, both protocols, 1000 rps and max throughput.
set -u
cd /work/main
for i in 1 2; do
  for which in before after; do
    echo "=== run $i $which $(date +%T)"
    /work/bench-target/release/mesh-bench run --mtls \
      --proxy-bin /work/bins/$which/mesh-proxy \
      --controller-bin /work/bench-target/release/mesh-controller \
      --protos h1,h2 --rates 1000 --rounds 2 --duration 5s --warmup 1s \
      --max-duration 5s --max-warmup 1s --max-rounds 2 \
      --connect-rounds 0 --idle-conns 0 --no-write > /work/benchruns/$which-$i.txt 2>&1
    echo "exit $?"
  done
done
