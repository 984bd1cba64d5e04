#!/usr/bin/env python3
"""Per-kernel time of a profiled window, from Nsight Compute's CSV.

    ncu --profile-from-start off --graph-profiling node --print-kernel-base function \
        --metrics gpu__time_duration.sum --csv nanovllm bench --profile ... > ncu.csv
    python3 scripts/ncu_kernels.py ncu.csv [--marker sample_finish_kernel]

ncu runs every kernel alone (no PDL overlap, caches as the replay leaves them), so the times are
each kernel's own, not its share of a step in the graph; the sum is an upper bound on the step's
device time. The marker kernel runs once a step (the sampler's last kernel): the window's steps
are its count, and each kernel's count and time are given per step.
"""
import argparse
import collections
import csv
import sys

SCALE = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6}


def read(path):
    """(kernel name, microseconds) for each gpu__time_duration row of the CSV, in launch order."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    header = next((i for i, r in enumerate(rows) if "Kernel Name" in r and "Metric Value" in r), None)
    if header is None:
        sys.exit(f"{path}: no header with 'Kernel Name' and 'Metric Value' (ncu --csv output expected)")
    h = rows[header]
    name, metric, unit, value = (h.index(c) for c in ("Kernel Name", "Metric Name", "Metric Unit", "Metric Value"))
    out = []
    for r in rows[header + 1:]:
        if len(r) != len(h) or r[metric] != "gpu__time_duration.sum":
            continue
        if r[unit] not in SCALE:
            sys.exit(f"{path}: unknown time unit '{r[unit]}'")
        out.append((r[name], float(r[value].replace(",", "")) * SCALE[r[unit]]))
    if not out:
        sys.exit(f"{path}: no gpu__time_duration.sum rows")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--marker", default="sample_finish_kernel", help="a kernel that runs once a step")
    a = ap.parse_args()
    times = read(a.csv)
    by = collections.defaultdict(list)
    for n, t in times:
        by[n].append(t)
    steps = len(by.get(a.marker, []))
    total = sum(t for _, t in times)
    print(f"{len(times)} kernels, {total:.1f} us; {steps} steps (marker {a.marker})")
    print(f"{'kernel':<40} {'a step':>7} {'mean us':>9} {'us a step':>10} {'share':>6}")
    for n, ts in sorted(by.items(), key=lambda kv: -sum(kv[1])):
        per = f"{len(ts) / steps:7.1f}" if steps else f"{'-':>7}"
        step_us = f"{sum(ts) / steps:10.1f}" if steps else f"{'-':>10}"
        print(f"{n[:40]:<40} {per} {sum(ts) / len(ts):9.2f} {step_us} {100 * sum(ts) / total:5.1f}%")
    if steps:
        print(f"{'a step':<40} {len(times) / steps:7.1f} {'':>9} {total / steps:10.1f}")


if __name__ == "__main__":
    main()
