#!/usr/bin/python3
"""Does a block's last reuse gap predict its next one well enough to order the
cache by it? (docs/replay.md, "Policy research", fifth round, session 4.)

Prints the correlation of log consecutive reuse gaps (in block references) and
P(reused again | used k times), then simulates a probation FIFO (1%) + 5x ghost
admission + main queue (the shape of `as3fifo`, fixed share) with the main queue
ordered by CLOCK, by predicted next use (last use + last gap, evict the
furthest; optionally overdue blocks first), or CLOCK where an overdue block
loses its second chance. Token-weighted prefix hit rate at 1M and 3M tokens.

usage: /usr/bin/python3 bench/replay/analysis/next_use_estimate.py TRACE.jsonl
"""
import collections
import heapq
import json
import math
import sys
from collections import OrderedDict


class Policy:
    def __init__(self, cap, main="clock", dead=1e9, small=0.01, ghost=5.0):
        self.cap, self.mode, self.dead = cap, main, dead
        self.small_share, self.gcap = small, int(ghost * cap)
        self.small, self.main, self.ghost = OrderedDict(), OrderedDict(), OrderedDict()
        self.freq, self.last, self.gap, self.ver, self.heap, self.now = {}, {}, {}, {}, [], 0

    def present(self, h):
        return h in self.freq

    def overdue(self, h):
        return h in self.gap and self.now - self.last[h] > self.dead * max(self.gap[h], 1)

    def access(self, h):
        self.gap[h] = self.now - self.last[h]
        self.last[h] = self.now
        self.freq[h] = min(self.freq[h] + 1, 3)
        if h in self.main and self.mode == "eta":
            self.main.move_to_end(h)
            self.push(h)

    def push(self, h):
        v = self.ver.get(h, 0) + 1
        self.ver[h] = v
        heapq.heappush(self.heap, (-(self.last[h] + self.gap[h]), v, h))

    def to_main(self, h):
        self.main[h] = 1
        if self.mode == "eta":
            self.push(h)

    def insert(self, h):
        while len(self.freq) >= self.cap:
            self.evict()
        self.freq[h], self.last[h] = 0, self.now
        if h in self.ghost:
            self.gap[h] = self.now - self.ghost.pop(h)
            self.to_main(h)
        else:
            self.small[h] = 1

    def drop(self, h):
        del self.freq[h]
        self.last.pop(h, None)
        self.gap.pop(h, None)
        self.ver.pop(h, None)

    def evict(self):
        while True:
            if self.small and (not self.main or len(self.small) >= self.small_share * len(self.freq)):
                h, _ = self.small.popitem(last=False)
                if self.freq[h] >= 1:
                    self.to_main(h)
                    continue
                self.ghost[h] = self.last[h]
                while len(self.ghost) > self.gcap:
                    self.ghost.popitem(last=False)
                self.drop(h)
                return
            if self.mode == "clock":
                h, _ = self.main.popitem(last=False)
                if self.freq[h] > 0 and not self.overdue(h):
                    self.freq[h] -= 1
                    self.main[h] = 1
                    continue
                self.drop(h)
                return
            victim = None
            for i, h in enumerate(self.main):  # least recently used first
                if i >= 8:
                    break
                if self.overdue(h):
                    victim = h
                    break
            while victim is None:
                _, v, h = heapq.heappop(self.heap)
                if self.ver.get(h) == v and h in self.main:
                    victim = h
            del self.main[victim]
            self.drop(victim)
            return


def run(reqs, policy):
    hit = tot = 0
    for inlen, hs in reqs:
        tot += inlen
        n, k = len(hs), 0
        while k < n and policy.present(hs[k]):
            k += 1
        for i in range(k):
            hit += 512 if i < n - 1 else inlen - 512 * (n - 1)
        for h in hs:
            policy.now += 1
            if policy.present(h):
                policy.access(h)
            else:
                policy.insert(h)
    return 100.0 * hit / tot


def main():
    reqs = [(r["input_length"], r["hash_ids"]) for r in map(json.loads, open(sys.argv[1]))]
    uses = collections.defaultdict(list)
    clock = 0
    for _, hs in reqs:
        for h in hs:
            uses[h].append(clock)
            clock += 1
    pairs = [(math.log1p(a[j - 1] - a[j - 2]), math.log1p(a[j] - a[j - 1]))
             for a in uses.values() for j in range(2, len(a))]
    n = len(pairs)
    mx, my = sum(p[0] for p in pairs) / n, sum(p[1] for p in pairs) / n
    cov = sum((p[0] - mx) * (p[1] - my) for p in pairs) / n
    vx, vy = sum((p[0] - mx) ** 2 for p in pairs) / n, sum((p[1] - my) ** 2 for p in pairs) / n
    print(f"consecutive reuse gaps: {n} pairs, correlation of logs {cov / math.sqrt(vx * vy):.3f}")
    for k in range(1, 6):
        c = sum(1 for a in uses.values() if len(a) >= k + 1)
        c2 = sum(1 for a in uses.values() if len(a) >= k + 2)
        print(f"P(reused again | {k} reuse(s)) = {c2 / max(c, 1):.3f}")
    variants = [("clock", 1e9), ("eta", 1e9), ("eta", 2), ("eta", 4), ("clock", 2), ("clock", 4), ("clock", 8)]
    for tokens in (1_000_000, 3_000_000):
        cells = [f"{m}{'' if d >= 1e8 else f' overdue>{d:g}x'}: {run(reqs, Policy(tokens // 512, m, d)):.2f}"
                 for m, d in variants]
        print(f"{tokens // 1_000_000}M tokens: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
