#!/usr/bin/python3
"""Does LIRS (Jiang and Zhang, SIGMETRICS 2002) beat the as3fifo shape on the
conversation trace? (docs/replay.md, "Policy research", sixth round, session 6.)

LIRS ranks blocks by their last inter-reference recency (IRR) instead of their
recency: the blocks with the smallest IRR are LIR and stay resident; every other
block is HIR and lives in a small resident queue (`hir` of the capacity). A
non-resident HIR block is remembered while it is above the deepest LIR block of
the recency stack S (bounded here to `ghost` x capacity remembered blocks); one
that is used again while remembered has a small IRR and becomes LIR, and the
deepest LIR block drops to HIR. This uses the trace's strongest signal, that
consecutive reuse gaps of a block are alike (next_use_estimate.py), in the way
the literature does, with the stack's pruning retiring blocks whose gap has
passed.

Same model as next_use_estimate.py (token-weighted prefix hit rate, 512-token
blocks, capacity in blocks = tokens // 512); its as3fifo-shaped CLOCK policy is
printed beside it as the baseline.

usage: /usr/bin/python3 bench/replay/analysis/lirs_prototype.py TRACE.jsonl  (~2 min)
"""
import heapq
import json
import sys
from collections import OrderedDict

from next_use_estimate import Policy, run

LIR, HIR, GHOST = 0, 1, 2


class Lirs:
    def __init__(self, cap, hir=0.01, ghost=3.0):
        self.cap = cap
        self.llirs = cap - max(1, int(hir * cap))
        self.stack = OrderedDict()  # S: recency order, last = most recent
        self.queue = OrderedDict()  # resident HIR blocks, first = next victim
        self.state = {}
        self.last = {}              # time of the last use (a ghost's place in S)
        self.ghosts = []            # heap of (last use, block) of remembered blocks; lazy
        self.nlir = self.nres = self.nghost = 0
        self.max_ghosts = int(ghost * cap)
        self.now = 0

    def present(self, h):
        return self.state.get(h, GHOST) != GHOST

    def _forget(self, h):
        del self.state[h]
        del self.last[h]
        self.nghost -= 1

    def _prune(self):
        while self.stack:
            b = next(iter(self.stack))
            if self.state[b] == LIR:
                return
            del self.stack[b]
            if self.state[b] == GHOST:
                self._forget(b)

    def _demote_deepest_lir(self):
        b, _ = self.stack.popitem(last=False)
        self.state[b] = HIR
        self.nlir -= 1
        self.queue[b] = 1
        self._prune()

    def _touch(self, h):
        self.last[h] = self.now
        self.stack[h] = 1
        self.stack.move_to_end(h)

    def access(self, h):
        if self.state[h] == LIR:
            self._touch(h)
            self._prune()
        elif h in self.stack:  # a resident HIR block with a small IRR
            self._touch(h)
            self.state[h] = LIR
            self.nlir += 1
            del self.queue[h]
            self._demote_deepest_lir()
        else:
            self._touch(h)
            self.queue.move_to_end(h)

    def _evict(self):
        v, _ = self.queue.popitem(last=False)
        self.nres -= 1
        if v not in self.stack:
            del self.state[v]
            del self.last[v]
            return
        self.state[v] = GHOST
        self.nghost += 1
        heapq.heappush(self.ghosts, (self.last[v], v))
        while self.nghost > self.max_ghosts:
            t, g = heapq.heappop(self.ghosts)
            if self.state.get(g) == GHOST and self.last[g] == t:
                del self.stack[g]
                self._forget(g)

    def insert(self, h):
        if self.nres >= self.cap:
            self._evict()
        self.nres += 1
        was_ghost = self.state.get(h) == GHOST
        if was_ghost:
            self.nghost -= 1
        if self.nlir < self.llirs or was_ghost:
            self.state[h] = LIR
            self.nlir += 1
            self._touch(h)
            if was_ghost and self.nlir > self.llirs:
                self._demote_deepest_lir()
            return
        self.state[h] = HIR
        self.queue[h] = 1
        self._touch(h)


def main():
    reqs = [(r["input_length"], r["hash_ids"]) for r in map(json.loads, open(sys.argv[1]))]
    for tokens in (1_000_000, 3_000_000, 10_000_000):
        cap = tokens // 512
        cells = [f"as3fifo-shaped CLOCK {run(reqs, Policy(cap)):.2f}"]
        for hir in (0.01, 0.05):
            for ghost in (1.0, 3.0, 10.0):
                cells.append(f"lirs hir={hir:g} ghost={ghost:g}x: {run(reqs, Lirs(cap, hir, ghost)):.2f}")
        print(f"{tokens // 1_000_000}M tokens: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
