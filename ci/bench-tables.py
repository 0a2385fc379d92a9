#!/usr/bin/env python3
"""Markdown tables for docs/benchmarks.md from a `lockcore bench --json FILE` result.

Usage: ci/bench-tables.py docs/bench-results.json > /tmp/tables.md
Prints the throughput matrix (lockcore's ratio to each implementation in brackets), acquire
latency at 2 threads, lockcore's own figures in every cell, and fairness at 16 threads.
"""
import json
import sys

ORDER = ["lockcore", "std-mutex+condvar", "pl-mutex+condvar", "dashmap-counts", "dashmap-rwlock",
         "tokio-rwlock", "atomic-words(limit)"]
TITLES = ["lockcore", "(1) std Mutex+Condvar", "(2) parking_lot Mutex+Condvar", "(3) DashMap counts",
          "(4) DashMap of RwLocks", "(5) tokio RwLock per key", "(6) atomic-word limit"]


def ns(v):
    if v >= 1_000_000:
        return f"{v / 1e6:.1f} ms"
    if v >= 10_000:
        return f"{v / 1e3:.1f} us"
    return f"{v:.0f} ns"


def main(path):
    d = json.load(open(path))
    cells = d["cells"]
    by = lambda c: {i["name"]: i for i in c["impls"]}
    print(f"Run: {d.get('tool', 'lockcore bench')} {d.get('version', '')}, {d['cpus']} CPUs, "
          f"load {d['loadavg_start'][0]} at start and {d['loadavg_end'][0]} at end, clock read "
          f"{d['clock_read_ns']:.1f} ns; ratio_vs_best_baseline={d['ratio_vs_best_baseline']:.2f}.\n")
    print("| workload | threads | load (1 min) | " + " | ".join(TITLES) + " |")
    print("| --- | --- | --- |" + " --- |" * len(TITLES))
    for c in cells:
        m = by(c)
        lc = m["lockcore"]["cmds_per_s"]
        row = [c["workload"], str(c["threads"]), f"{c['loadavg'][0]:.1f}"]
        for name in ORDER:
            if name not in m:
                row.append("-")
                continue
            i = m[name]
            if name == "lockcore":
                row.append(f"**{i['cmds_per_s'] / 1e6:.3f}** (spread {i['spread_pct']:.0f}%)")
            else:
                row.append(f"{i['cmds_per_s'] / 1e6:.3f} ({lc / i['cmds_per_s']:.2f}x)")
        print("| " + " | ".join(row) + " |")
    print("\n### Acquire latency at 2 threads: p50 / p99 / p999\n")
    print("| workload (2 threads) | " + " | ".join(TITLES) + " |")
    print("| --- |" + " --- |" * len(TITLES))
    for c in cells:
        if c["threads"] != 2:
            continue
        m = by(c)
        row = [c["workload"]]
        for name in ORDER:
            i = m.get(name)
            row.append("-" if i is None else f"{ns(i['p50_ns'])} / {ns(i['p99_ns'])} / {ns(i['p999_ns'])}")
        print("| " + " | ".join(row) + " |")
    print("\n### lockcore in every cell\n")
    print("| workload | threads | p50 | p99 | p999 | max | longest 64-key wait | slowest/fastest thread "
          "| conflicts/cmd | allocations/cmd | keys in table under load / after | process RSS under load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in cells:
        i = by(c)["lockcore"]
        big = ns(i["max_wait_big_ns"]) if i.get("max_wait_big_ns") else "-"
        alloc = "-" if i.get("allocs_per_cmd") is None else f"{i['allocs_per_cmd']:.2f}"
        rss = "-" if i.get("rss_load_kib") is None else f"{i['rss_load_kib'] / 1024:.0f} MiB"
        print(f"| {c['workload']} | {c['threads']} | {ns(i['p50_ns'])} | {ns(i['p99_ns'])} | "
              f"{ns(i['p999_ns'])} | {ns(i['max_ns'])} | {big} | {i['fairness']:.2f} | "
              f"{i['conflicts_per_cmd']:.3f} | {alloc} | {i.get('table_keys_load', '-')} / "
              f"{i.get('table_keys_idle', '-')} | {rss} |")
    print("\n### Fairness at 16 threads (slowest thread / fastest)\n")
    print("| workload (16 threads) | " + " | ".join(TITLES) + " |")
    print("| --- |" + " --- |" * len(TITLES))
    for c in cells:
        if c["threads"] != 16:
            continue
        m = by(c)
        print("| " + " | ".join([c["workload"]] + ["-" if n not in m else f"{m[n]['fairness']:.2f}" for n in ORDER]) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/bench-results.json")
