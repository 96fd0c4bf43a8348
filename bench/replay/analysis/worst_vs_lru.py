#!/usr/bin/python3
"""For each `kvhub-replay --sim --json` file given: every policy's worst and
mean difference to LRU over the file's capacities, in percentage points of
token hit rate ("never below LRU at any capacity", docs/results-replay.md).

usage: /usr/bin/python3 bench/replay/analysis/worst_vs_lru.py RUN.json [RUN.json ...]
"""
import json
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        with open(path) as f:
            results = [r for r in json.load(f)["results"] if r["capacity_tokens"] > 0]
        by_policy = {}
        for r in results:
            by_policy.setdefault(r["policy"], {})[r["capacity_tokens"]] = 100 * r["hit_rate"]
        lru = by_policy.get("lru")
        if lru is None:
            sys.exit(f"{path}: no lru results to compare with")
        cells = []
        for policy, rates in by_policy.items():
            if policy in ("lru", "belady"):
                continue
            diffs = [(rates[c] - lru[c], c) for c in rates if c in lru]
            worst, at = min(diffs)
            mean = sum(d for d, _ in diffs) / len(diffs)
            cells.append(f"{policy} worst {worst:+.2f} pp at {at / 1e6:g}M, mean {mean:+.2f}")
        print(f"{path}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
