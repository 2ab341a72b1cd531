"""Print pytest-benchmark results as one table per group, with fastnn's speed-up over each peer.

    pytest benchmarks/ --benchmark-only --benchmark-json=RESULTS.json
    python benchmarks/report.py RESULTS.json

speed-up = peer median / fastnn median, from the same run, so both ran on the same machine
under the same load. samples/s = n_samples (from extra_info) / median seconds.
"""
import json
import sys
from collections import defaultdict


def _is_fastnn(bench):
    return bench["extra_info"].get("impl") == "fastnn"


def format_group(group, benches):
    """The table for one group as a list of lines: fastnn first, then peers by median."""
    benches = sorted(benches, key=lambda b: (not _is_fastnn(b), b["stats"]["median"]))
    fastnn = next((b for b in benches if _is_fastnn(b)), None)
    header = (f"{'name':<24} {'median s':>9} {'min-max s':>15} {'samples/s':>10} "
              f"{'fastnn x':>9} {'load':>5}")
    lines = [f"== {group}", header, "-" * len(header)]
    for b in benches:
        st, info = b["stats"], b["extra_info"]
        n = info.get("n_samples")
        rate = f"{n / st['median']:10,.0f}" if n else f"{'?':>10}"
        speedup = f"{st['median'] / fastnn['stats']['median']:9.2f}" if fastnn else f"{'-':>9}"
        spread = f"{st['min']:.3f}-{st['max']:.3f}"
        load = info.get("loadavg_1min")
        load = f"{load:5.2f}" if load is not None else f"{'?':>5}"
        lines.append(f"{b['name']:<24} {st['median']:9.3f} {spread:>15} {rate} {speedup} {load}")
    rounds = sorted({b["stats"]["rounds"] for b in benches})
    lines.append(f"rounds: {', '.join(map(str, rounds))}; "
                 "fastnn x = peer median / fastnn median (fastnn's speed-up);")
    lines.append("load = 1-min load average as the benchmark ended")
    return lines


def main(path):
    with open(path) as f:
        results = json.load(f)
    cpu = results.get("machine_info", {}).get("cpu", {}).get("brand_raw", "unknown CPU")
    print(f"{path}: {cpu}, {results.get('datetime', '')}")
    groups = defaultdict(list)
    for b in results["benchmarks"]:
        groups[b["group"] or "(no group)"].append(b)
    for group in sorted(groups):
        print()
        print("\n".join(format_group(group, groups[group])))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/report.py RESULTS.json")
    main(sys.argv[1])
