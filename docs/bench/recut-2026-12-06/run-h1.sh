#!/usr/bin/env bash
# HTTP/1.1 only, more rounds: is the 1000 rps CPU difference real?
set -u
cd /work/main
for i in 3 4; do
  for which in after before; do
    echo "=== run $i $which $(date +%T)"
    /work/bench-target/release/mesh-bench run --mtls \
      --proxy-bin /work/bins/$which/mesh-proxy \
      --controller-bin /work/bench-target/release/mesh-controller \
      --protos h1 --rates 1000 --rounds 3 --duration 5s --warmup 1s \
      --max-duration 5s --max-warmup 1s --max-rounds 2 \
      --connect-rounds 0 --idle-conns 0 --no-write > /work/benchruns/$which-$i.txt 2>&1
    echo "exit $?"
  done
done
