#!/usr/bin/python3
"""Guards "never below LRU at any capacity" on traces the policies were not tuned
on (ctest replay_policy_guard_test; docs/results-replay.md, "Stress traces").

Writes the four stress traces of bench/replay/analysis/stress_traces.py (recency,
zipf, loop, phases; seed 1) and the agentic workload, runs `kvhub-replay --sim` on
each over capacities from 0.02M to 10M tokens, and checks that:
  - duel's token hit rate is at least LRU's at every capacity of every trace;
  - on the loop, where LRU and as3fifo lose the whole cycle, duel gets at least
    90% of what S3-FIFO gets at the capacity where S3-FIFO leads LRU most.

Usage: replay_policy_guard_test.py --source REPO --bin BUILD/bin
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

CAPACITIES = "0.02M,0.05M,0.1M,0.5M,1M,2M,5M,10M"


def run_sim(replay, source_args, policies, out):
    cmd = [replay, *source_args, "--sim", "--no_belady", "--capacities", CAPACITIES,
           "--policies", policies, "--json", out]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}")
    with open(out) as f:
        results = [r for r in json.load(f)["results"] if r["capacity_tokens"] > 0]
    table = {}
    for r in results:
        table.setdefault(r["policy"], {})[r["capacity_tokens"]] = r["hit_tokens"]
    requested = results[0]["requested_tokens"]
    return table, requested


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--bin", required=True)
    args = ap.parse_args()
    replay = os.path.join(args.bin, "kvhub-replay")
    generator = os.path.join(args.source, "bench/replay/analysis/stress_traces.py")
    failures = []
    with tempfile.TemporaryDirectory(prefix="kvhub-guard-") as tmp:
        sources = {}
        for kind in ("recency", "zipf", "loop", "phases"):
            path = os.path.join(tmp, kind + ".jsonl")
            subprocess.run([sys.executable, generator, kind, "1", path], check=True,
                           stdout=subprocess.DEVNULL)
            sources[kind] = ["--trace", path]
        sources["agentic"] = ["--generate", "agentic", "--seed", "1"]
        for name, source_args in sources.items():
            policies = "lru,duel,s3fifo" if name == "loop" else "lru,duel"
            table, requested = run_sim(replay, source_args, policies,
                                       os.path.join(tmp, name + ".json"))
            worst = min((table["duel"][c] - table["lru"][c], c) for c in table["lru"])
            print(f"{name}: worst duel - lru = {100.0 * worst[0] / requested:+.3f} pp "
                  f"at {worst[1] / 1e6:g}M tokens")
            if worst[0] < 0:
                failures.append(f"{name}: duel below LRU at {worst[1] / 1e6:g}M tokens")
            if name == "loop":
                best = max(table["s3fifo"], key=lambda c: table["s3fifo"][c] - table["lru"][c])
                s3, duel = table["s3fifo"][best], table["duel"][best]
                print(f"loop: at {best / 1e6:g}M tokens s3fifo {100.0 * s3 / requested:.2f}%, "
                      f"duel {100.0 * duel / requested:.2f}%")
                if s3 == 0 or duel < 0.9 * s3:
                    failures.append(f"loop: duel {duel} hit tokens < 90% of s3fifo's {s3} "
                                    f"at {best / 1e6:g}M tokens")
    for f in failures:
        print("FAIL:", f)
    print("FAILED" if failures else "PASSED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
