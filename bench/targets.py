#!/usr/bin/env python3
"""Reads verifier_bench's JSON output and prints issue #3's targets as ratios.

Usage:
  ./build/bench/verifier_bench --benchmark_repetitions=3 \
      --benchmark_report_aggregates_only=true --benchmark_format=json > run.json
  python3 bench/targets.py run.json

Every ratio is taken within the one file given, so that figures from one run
on one (noisy, shared) machine are compared only with each other. With
repetitions the medians are used, otherwise the single runs. A target whose
benchmarks are not in the file is listed as "not run".

Besides the targets, it prints the most any verifier could reach against the
shared_mutex baseline at 2 threads on this machine: a verifier that cost
nothing but its hash (BM_HashOnly), running twice as fast with 2 threads as
with 1. When that bound is below 3, the 3x target cannot be met here by any
index or synchronisation, only on a machine where the baseline's lock word
costs more to share.
"""

import json
import sys


def load(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    runs = {}
    have_median = any(b.get("aggregate_name") == "median" for b in data["benchmarks"])
    for b in data["benchmarks"]:
        if have_median:
            if b.get("aggregate_name") != "median":
                continue
            name = b["run_name"]
        else:
            if b.get("run_type") == "aggregate":
                continue
            name = b["name"]
        runs[name] = b
    return data.get("context", {}), runs


def main():
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    context, runs = load(sys.argv[1])

    def get(name, field):
        b = runs.get(name)
        if b is None or field not in b:
            return None
        return float(b[field])

    def t1(bench):
        return f"{bench}/real_time/threads:1"

    def t2(bench):
        return f"{bench}/real_time/threads:2"

    rows = []

    def ratio(label, num, den, limit, at_most):
        if num is None or den is None or den == 0:
            rows.append((label, "not run", ""))
            return
        r = num / den
        met = r <= limit if at_most else r >= limit
        bound = f"<= {limit:g}x" if at_most else f">= {limit:g}x"
        rows.append((label, f"{r:.2f}x", f"{bound}: {'met' if met else 'MISSED'}"))

    def value(label, v, limit, unit):
        if v is None:
            rows.append((label, "not run", ""))
            return
        met = v <= limit
        rows.append((label, f"{v:.1f} {unit}", f"<= {limit:g} {unit}: {'met' if met else 'MISSED'}"))

    hash1 = get(t1("BM_HashOnly"), "real_time")
    ratio("BM_VerifyHit / BM_HashOnly (ns/op, 1 thread)", get(t1("BM_VerifyHit"), "real_time"),
          hash1, 2.0, True)
    value("BM_VerifyHit p99 (1 thread)", get(t1("BM_VerifyHit"), "p99_ns"), 300, "ns")
    ratio("BM_VerifyBadChecksum / BM_HashOnly", get(t1("BM_VerifyBadChecksum"), "real_time"),
          hash1, 0.5, True)
    cold = "BM_VerifyColdUniform/10000000"
    value("BM_VerifyColdUniform/10M p50", get(t1(cold), "p50_ns"), 450, "ns")
    value("BM_VerifyColdUniform/10M p99", get(t1(cold), "p99_ns"), 1000, "ns")
    ratio("BM_VerifyColdUniform 10M / 1K (ns/op)", get(t1(cold), "real_time"),
          get(t1("BM_VerifyColdUniform/1000"), "real_time"), 3.0, True)
    hit1 = get(t1("BM_VerifyHit"), "items_per_second")
    hit2 = get(t2("BM_VerifyHit"), "items_per_second")
    shared2 = get(t2("BM_SharedMutexVerifyHit"), "items_per_second")
    ratio("BM_VerifyHit items/s, 2 threads / 1 thread", hit2, hit1, 1.8, False)
    ratio("BM_VerifyHit / BM_SharedMutexVerifyHit items/s, 2 threads", hit2, shared2, 3.0, False)
    memory_runs = [n for n in runs if n.startswith("BM_IndexMemory/10000000")]
    memory = get(memory_runs[0], "rss_bytes_per_key") if memory_runs else None
    value("index memory at 10M keys (RSS growth)", memory, 128, "B/key")

    width = max(len(r[0]) for r in rows)
    print(f"{context.get('date', '?')}, {context.get('num_cpus', '?')} CPUs")
    for label, v, verdict in rows:
        print(f"{label:<{width}}  {v:>10}  {verdict}")
    hashonly1 = get(t1("BM_HashOnly"), "items_per_second")
    if hashonly1 is not None and shared2 is not None:
        print(f"\nA verifier costing only its hash, 2x faster on 2 threads, would reach "
              f"{2 * hashonly1 / shared2:.2f}x the shared_mutex baseline at 2 threads here "
              f"(2 x BM_HashOnly items/s / BM_SharedMutexVerifyHit items/s at 2 threads).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
