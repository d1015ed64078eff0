#!/usr/bin/env python3
"""Reads mesh-bench reports named WHICH-N.md and prints, per metric, each binary's
values run by run and the ratio of their means (the second binary over the first)."""
import re, sys, collections

def metrics(text):
    m = {}
    for proto, name in (("HTTP/1.1", "h1"), ("HTTP/2", "h2")):
        r = re.search(rf"^\| {re.escape(proto)} \| \d+ \| \d+ \| \d+ \| ([\d.]+)% \|", text, re.M)
        if r: m[f"{name} max throughput, % of direct"] = float(r.group(1))
        for load in ("1000 rps", "max"):
            r = re.search(rf"^\| {re.escape(proto)} \| {load} \| ([\d.]+) \| ([\d.]+) \|", text, re.M)
            if r:
                m[f"{name} {load} µs/req outbound"] = float(r.group(1))
                m[f"{name} {load} µs/req inbound"] = float(r.group(2))
    memory = text[text.find("## Proxy memory"):]
    for side in ("outbound", "inbound"):
        r = re.search(rf"^\| {side} proxy \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", memory, re.M)
        if r:
            m[f"{side} RSS idle MB"] = float(r.group(1))
            m[f"{side} RSS at h1 max MB"] = float(r.group(2))
            m[f"{side} RSS at h2 max MB"] = float(r.group(3))
    return m

runs = collections.defaultdict(dict)
for path in sys.argv[1:]:
    which, n = re.match(r".*?([\w-]+)-(\d+)\.md$", path).groups()
    runs[which][int(n)] = metrics(open(path).read())
a, b = sorted(runs, key=lambda w: w != "before")[:2]
keys = list(next(iter(runs[a].values())))
print(f"| metric | {a} (runs) | {b} (runs) | {b} / {a} (means) |")
print("|---|---|---|---:|")
for k in keys:
    va = [runs[a][n][k] for n in sorted(runs[a]) if k in runs[a][n]]
    vb = [runs[b][n][k] for n in sorted(runs[b]) if k in runs[b][n]]
    if not va or not vb: continue
    ratio = (sum(vb) / len(vb)) / (sum(va) / len(va))
    print(f"| {k} | {', '.join(map(str, va))} | {', '.join(map(str, vb))} | {ratio:.3f} |")
