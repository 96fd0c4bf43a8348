#!/usr/bin/python3
"""Plots kvhub-replay --sim --json output: token-weighted prefix hit rate vs cache
capacity, one line per policy, Belady (MIN) and the infinite cache as references.

usage: /usr/bin/python3 bench/replay/plot_replay.py RESULT.json OUT.png [--title T]
       [--policies lru,duel]

With a --byte_budget result (records carry "codec" and "budget_bytes") it plots
hit rate vs DRAM budget (GB), one line per (codec, policy).
Needs python3-matplotlib (Debian package).
"""
import argparse
import json
import sys

try:
    import matplotlib
except ImportError:
    sys.exit("plot_replay: needs matplotlib for /usr/bin/python3: apt-get install python3-matplotlib")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("png")
    ap.add_argument("--title", default="")
    ap.add_argument("--policies", default="")
    a = ap.parse_args()
    try:
        with open(a.json) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit("plot_replay: cannot read %s: %s" % (a.json, e))
    if not isinstance(d, dict) or not isinstance(d.get("results"), list):
        sys.exit("plot_replay: %s is not kvhub-replay --json output (no \"results\" list)" % a.json)
    keep = set(p for p in a.policies.split(",") if p)
    known = set(r.get("policy") for r in d["results"])
    if keep - known:
        sys.exit("plot_replay: %s has no results for policy %s (it has: %s)"
                 % (a.json, ", ".join(sorted(keep - known)), ", ".join(sorted(str(k) for k in known))))
    if any("codec" in r for r in d["results"]):
        return plot_budget(d, a, keep)
    lines = {}
    inf = None
    for r in d["results"]:
        if r["policy"] == "infinite":
            inf = r["hit_rate"]
            continue
        if keep and r["policy"] not in keep and r["policy"] != "belady":
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


def plot_budget(d, a, keep):
    lines = {}
    inf = None
    for r in d["results"]:
        if r["policy"] == "infinite":
            inf = r["hit_rate"]
            continue
        if keep and r["policy"] not in keep and r["policy"] != "belady":  # the reference stays
            continue
        key = "%s / %s" % (r["codec"], r["policy"])
        lines.setdefault(key, []).append((r["budget_bytes"] / 1e9, 100 * r["hit_rate"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    codecs = sorted(set(name.split(" / ")[0] for name in lines))
    colors = {c: "C%d" % i for i, c in enumerate(codecs)}
    for name, pts in sorted(lines.items()):
        pts.sort()
        codec, policy = name.split(" / ")
        style = (dict(linestyle=":", linewidth=1) if policy == "belady" else
                 dict(linestyle="--", marker="x") if policy == "lru" else dict(marker="o"))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, color=colors[codec], **style)
    if inf is not None:
        ax.axhline(100 * inf, color="gray", linestyle=":", label="infinite")
    ax.set_xscale("log")
    ax.set_xlabel("DRAM budget (GB of encoded blocks)")
    ax.set_ylabel("token-weighted prefix hit rate (%)")
    ax.set_title(a.title or d.get("trace", ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(a.png, dpi=120)


if __name__ == "__main__":
    try:
        main()
    except (KeyError, TypeError) as e:
        sys.exit("plot_replay: malformed result row (%s: %s)" % (type(e).__name__, e))
    except OSError as e:
        sys.exit("plot_replay: %s" % e)
