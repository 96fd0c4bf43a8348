#!/usr/bin/python3
"""Plots kvhub-replay --sim --json output: token-weighted prefix hit rate vs cache
capacity, one line per policy, Belady (MIN) and the infinite cache as references.

usage: /usr/bin/python3 bench/replay/plot_replay.py RESULT.json OUT.png [--title T]
Needs python3-matplotlib (Debian package).
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("png")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    with open(a.json) as f:
        d = json.load(f)
    lines = {}
    inf = None
    for r in d["results"]:
        if r["policy"] == "infinite":
            inf = r["hit_rate"]
            continue
        lines.setdefault(r["policy"], []).append((r["capacity_tokens"] / 1e6, 100 * r["hit_rate"]))
    if not lines:
        sys.exit("no results in " + a.json)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in lines.items():
        pts.sort()
        style = dict(linestyle="--", color="black") if name == "belady" else {}
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name, **style)
    if inf is not None:
        ax.axhline(100 * inf, color="gray", linestyle=":", label="infinite")
    ax.set_xscale("log")
    ax.set_xlabel("cache capacity (million tokens, 512-token blocks)")
    ax.set_ylabel("token-weighted prefix hit rate (%)")
    ax.set_title(a.title or d.get("trace", ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.png, dpi=120)


if __name__ == "__main__":
    main()
