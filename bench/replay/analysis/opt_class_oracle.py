#!/usr/bin/python3
"""How much could a Hawkeye-style policy (Jain and Lin, ISCA 2016: learn, per
signature of a block's insertion, whether Belady's MIN would have kept it) gain on the
conversation trace? (docs/replay.md, "Policy research", seventh round, session 7.)

An upper bound for any such learner: Belady with bypass is run at the capacity and
labels every insertion "friendly" (kept until its next use) or not; insertions are
grouped by a signature a shard can see when a block arrives (depth in the chain,
partial tail, new blocks in the request, offset among them, children and uses of the
parent so far), and each class gets its *true* friendly rate from the whole trace (an
oracle: a learner only sees the past). Then:
  * LRU, with blocks of classes below theta inserted at the LRU end;
  * the as3fifo-shaped policy of next_use_estimate.py, with blocks of classes at or
    above theta admitted straight to its main queue.

Same model as next_use_estimate.py (token-weighted prefix hit rate, 512-token
blocks, capacity in blocks = tokens // 512); Belady reproduces `--sim`'s figures.

usage: /usr/bin/python3 bench/replay/analysis/opt_class_oracle.py TRACE.jsonl MTOKENS  (seconds)
"""
import json, sys, heapq
from collections import OrderedDict, defaultdict
TR = sys.argv[1]; CAP = int(float(sys.argv[2]) * 1e6) // 512
reqs = []
for line in open(TR):
    j = json.loads(line); reqs.append((j["input_length"], j["hash_ids"]))
# access sequence
acc = []
for r, (inlen, hs) in enumerate(reqs):
    for i, h in enumerate(hs): acc.append((r, i, h))
T = len(acc)
nxt = [T + 1] * T
last = {}
for t in range(T - 1, -1, -1):
    h = acc[t][2]; nxt[t] = last.get(h, T + 1 + t); last[h] = t  # never reused: far future unique
# Belady with bypass: label each miss-insert as friendly if OPT keeps it until next use.
def belady_labels():
    res = {}  # h -> next use time
    heap = []  # (-next, h)
    labels = {}  # t -> friendly?
    inserted_at = {}
    hit = tot = 0
    t = 0
    for r, (inlen, hs) in enumerate(reqs):
        tot += inlen; n = len(hs); k = 0
        while k < n and hs[k] in res: k += 1
        for i in range(k): hit += 512 if i < n - 1 else inlen - 512 * (n - 1)
        for i, h in enumerate(hs):
            nu = nxt[t]
            if h in res:
                if h in inserted_at: labels[inserted_at.pop(h)] = True
                res[h] = nu; heapq.heappush(heap, (-nu, h))
            else:
                # insert, then evict farthest (maybe itself)
                res[h] = nu; heapq.heappush(heap, (-nu, h)); inserted_at[h] = t
                while len(res) > CAP:
                    negnu, v = heapq.heappop(heap)
                    if res.get(v) != -negnu: continue
                    del res[v]
                    if v in inserted_at: labels[inserted_at.pop(v)] = False
            t += 1
    for h, ti in inserted_at.items(): labels[ti] = False
    return labels, 100.0 * hit / tot
labels, bel = belady_labels()
print("belady %.2f%%  inserts %d friendly %.3f" % (bel, len(labels), sum(labels.values()) / len(labels)))
# features at insert
children = defaultdict(set); uses = defaultdict(int)
feat = {}
t = 0
seen = set()
for r, (inlen, hs) in enumerate(reqs):
    n = len(hs); k = 0
    while k < n and hs[k] in seen: k += 1
    for i, h in enumerate(hs):
        if h not in seen:
            parent = hs[i - 1] if i > 0 else None
            turn = len(children[parent]) if parent is not None else -1
            f = (min(i, 8) if i < 8 else 8 + min((i - 8) // 8, 4),  # depth bucket
                 i == n - 1,                     # last (partial) block
                 min(n - k, 10) // 2,            # new blocks in request
                 min(i - k, 6),                  # offset among new
                 min(turn, 4),
                 min(uses[parent], 4) if parent is not None else -1)
            feat[t] = f
            seen.add(h)
        if i > 0: children[hs[i - 1]].add(h)
        uses[h] += 1
        t += 1
cls = defaultdict(lambda: [0, 0])
for ti, lab in labels.items():
    if ti in feat:
        c = cls[feat[ti]]; c[0] += lab; c[1] += 1
print("classes", len(cls))
# policy: LRU where inserts of classes with friendly rate < theta go to the LRU end
def lru_class(theta, reinserts_too=True):
    od = OrderedDict(); hit = tot = 0; t = 0
    first = set()
    for r, (inlen, hs) in enumerate(reqs):
        tot += inlen; n = len(hs); k = 0
        while k < n and hs[k] in od: k += 1
        for i in range(k): hit += 512 if i < n - 1 else inlen - 512 * (n - 1)
        for i, h in enumerate(hs):
            if h in od: od.move_to_end(h)
            else:
                f = feat.get(t)
                good = True
                if f is not None:
                    c = cls[f]; good = c[0] / c[1] >= theta
                od[h] = 1
                if not good: od.move_to_end(h, last=False)
                if len(od) > CAP: od.popitem(last=False)
            t += 1
    return 100.0 * hit / tot
for th in [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4]:
    print("lru+class-oracle theta %.2f: %.2f%%" % (th, lru_class(th)))
import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from next_use_estimate import Policy
class ClassPolicy(Policy):
    def __init__(self, cap, good, **kw):
        super().__init__(cap, **kw); self.good = good; self.t = 0
    def insert(self, h):
        while len(self.freq) >= self.cap: self.evict()
        self.freq[h], self.last[h] = 0, self.now
        if h in self.ghost:
            self.gap[h] = self.now - self.ghost.pop(h); self.to_main(h)
        elif self.good(self.t):
            self.to_main(h)
        else:
            self.small[h] = 1
def run_cls(good, **kw):
    p = ClassPolicy(CAP, good, **kw); hit = tot = 0; t = 0
    for r, (inlen, hs) in enumerate(reqs):
        tot += inlen; n = len(hs); k = 0
        while k < n and p.present(hs[k]): k += 1
        for i in range(k): hit += 512 if i < n - 1 else inlen - 512 * (n - 1)
        for h in hs:
            p.now += 1; p.t = t
            if p.present(h): p.access(h)
            else: p.insert(h)
            t += 1
    return 100.0 * hit / tot
print("as3fifo-shape baseline: %.2f%%" % run_cls(lambda t: False))
for th in [0.3, 0.4, 0.5, 0.6]:
    g = lambda t, th=th: t in feat and cls[feat[t]][0] / cls[feat[t]][1] >= th
    print("as3fifo-shape + oracle class to main, theta %.2f: %.2f%%" % (th, run_cls(g)))
