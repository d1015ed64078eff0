#!/usr/bin/env python3
"""Reads criterion's console output, files micro-KIND-WHICH-ROUND.txt, and prints each
benchmark's median time per binary and round, and the ratio of the means."""
import re, sys, collections

UNIT = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6}

def parse(path):
    times, name = {}, None
    for line in open(path):
        m = re.match(r"^(\S+)?\s*time:\s+\[\S+ \S+ (\S+) (\S+)", line)
        if m:
            times[m.group(1) or name] = float(m.group(2)) * UNIT[m.group(3)]
        elif line.strip() and not line.startswith((" ", "Benchmarking", "Found", "change", "Performance", "No change")):
            name = line.split()[0]
    return times

rows = collections.OrderedDict()
for path in sys.argv[1:]:
    which = re.search(r"micro-\w+-(before|after)-\d+\.txt$", path).group(1)
    for k, v in parse(path).items():
        rows.setdefault(k, {}).setdefault(which, []).append(v)
print("| benchmark | before, ns | after, ns | after / before (means) |")
print("|---|---|---|---:|")
for k, d in rows.items():
    b, a = d.get("before", []), d.get("after", [])
    if b and a:
        r = (sum(a) / len(a)) / (sum(b) / len(b))
        print(f"| {k} | {', '.join(f'{x:.1f}' for x in b)} | {', '.join(f'{x:.1f}' for x in a)} | {r:.3f} |")
