#!/usr/bin/python3
"""How well can a block's reuse be predicted when it is inserted? (docs/replay.md,
"Policy research", session 3.)

For every block of a Mooncake-format trace at its first appearance, ten features
known at that moment (reused-prefix length, new blocks of the request, offset
among them, distance from the end, partial tail, conversation turn, input and
output length, continuation, first new block) and two labels: reused ever, and
reused within H = 6000 later first appearances (about what a 3M-token cache holds).
A logistic regression is fit on the first half and scored on the second: AUC and
the precision/recall of admitting the top 10/25/50%.

usage: /usr/bin/python3 bench/replay/analysis/reuse_predictability.py TRACE.jsonl
(needs python3-numpy)
"""
import collections
import json
import math
import sys

import numpy as np

H = 6000


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def features(reqs):
    seen, turn, uses, rows = {}, {}, collections.defaultdict(list), []
    ins = 0
    for r in reqs:
        hs = r['hash_ids']
        n = len(hs)
        k = 0
        while k < n and hs[k] in seen:
            k += 1
        t = turn.get(hs[k - 1], 0) + 1 if k >= 2 else 1
        for i, h in enumerate(hs):
            if h in seen:
                uses[h].append(ins)
                continue
            seen[h] = ins
            turn[h] = t
            j = i - k
            rows.append((h, ins, [1.0, math.log1p(k), math.log1p(n - k), math.log1p(j),
                                  math.log1p(n - 1 - i), float(i == n - 1), min(t, 10) / 10,
                                  math.log1p(r['input_length']), math.log1p(r['output_length']),
                                  float(k >= 2), float(j == 0)]))
            ins += 1
    x = np.array([row[2] for row in rows])
    ever = np.array([1.0 if uses[row[0]] else 0.0 for row in rows])
    near = np.array([1.0 if uses[row[0]] and uses[row[0]][0] - row[1] < H else 0.0 for row in rows])
    return x, ever, near


def standardize(x, mu, sd):
    z = x.copy()
    z[:, 1:] = (x[:, 1:] - mu) / sd
    return z


def fit(x, y, iters=300, rate=2.0):
    mu, sd = x[:, 1:].mean(0), x[:, 1:].std(0) + 1e-9
    z = standardize(x, mu, sd)
    w = np.zeros(x.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-z @ w))
        w -= rate * z.T @ (p - y) / len(y)
    return w, mu, sd


def auc(p, y):
    order = np.argsort(p)
    rank = np.empty(len(p))
    rank[order] = np.arange(len(p))
    pos = y == 1
    return (rank[pos].sum() - pos.sum() * (pos.sum() - 1) / 2) / (pos.sum() * (~pos).sum())


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    x, ever, near = features(load(sys.argv[1]))
    half = len(x) // 2
    print(f'blocks {len(x)}, reused ever {ever.mean():.3f}, within {H} insertions {near.mean():.3f}')
    for name, y in (('ever', ever), ('near', near)):
        w, mu, sd = fit(x[:half], y[:half])
        p = 1 / (1 + np.exp(-standardize(x[half:], mu, sd) @ w))
        yt = y[half:]
        print(f'{name}: AUC {auc(p, yt):.3f}')
        for q in (0.1, 0.25, 0.5):
            sel = p >= np.quantile(p, 1 - q)
            print(f'  admit top {q:.0%}: precision {yt[sel].mean():.3f}, '
                  f'recall {yt[sel].sum() / yt.sum():.3f}')


if __name__ == '__main__':
    main()
