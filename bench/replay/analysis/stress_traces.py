#!/usr/bin/python3
"""Traces built to break eviction policies, in Mooncake format (docs/replay.md,
"Policy research", eighth round, session 12).

The claim "never below LRU at any capacity" has to hold on traces we do not
have. The conversation trace and the agentic generator favour admission
filters (most blocks are used once); these four shapes push the other way, or
change their mind half-way:

  recency  conversations that grow by 1-4 blocks a turn; 80% of turns resume
           one of the last few conversations (geometric, mean ~3), the rest
           start a new one of 2-8 blocks. LRU's best case: almost every reuse
           is recent, so a policy that makes new blocks prove themselves loses.
  zipf     5,000 shared documents (4-40 blocks) picked by Zipf(0.9)
           popularity, each followed by 1-6 private blocks: frequency wins.
  loop     800 conversations (10-30 blocks) replayed in a cycle, one new block
           per request: LRU gets nothing until everything fits.
  phases   recency and Zipf(1.0) alternating every 5,000 requests: the policy
           has to follow the workload as it changes.

Every request is one chain: `hash_ids` name 512-token blocks, and a block id
always follows the same parent, as in the Mooncake traces. input_length is the
chain's tokens less 0-511 (a partial last block); timestamps are 100 ms apart.

usage: /usr/bin/python3 bench/replay/analysis/stress_traces.py KIND SEED OUT.jsonl
then:  build/bin/kvhub-replay --trace OUT.jsonl --sim --capacities ... --policies lru,duel
"""
import json
import random
import sys


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("recency", "zipf", "loop", "phases"):
        sys.exit(__doc__)
    kind, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    next_id = [0]

    def new_blocks(n):
        ids = list(range(next_id[0], next_id[0] + n))
        next_id[0] += n
        return ids

    recent = []  # recency: conversations, most recently used last

    def recency_turn():
        if recent and rng.random() < 0.8:
            k = min(len(recent), 1 + int(rng.expovariate(1 / 3)))
            chain = recent.pop(len(recent) - k)
        else:
            chain = new_blocks(rng.randint(2, 8))
        chain = chain + new_blocks(rng.randint(1, 4))
        recent.append(chain)
        return chain

    def zipf_picker(docs, alpha):
        weights = [1 / (i + 1) ** alpha for i in range(len(docs))]
        return lambda: rng.choices(docs, weights=weights)[0] + new_blocks(rng.randint(1, 6))

    requests = []
    if kind == "recency":
        requests = [recency_turn() for _ in range(20000)]
    elif kind == "zipf":
        pick = zipf_picker([new_blocks(rng.randint(4, 40)) for _ in range(5000)], 0.9)
        requests = [pick() for _ in range(20000)]
    elif kind == "loop":
        convs = [new_blocks(rng.randint(10, 30)) for _ in range(800)]
        requests = [convs[i % len(convs)] + new_blocks(1) for i in range(20000)]
    else:
        pick = zipf_picker([new_blocks(rng.randint(4, 40)) for _ in range(3000)], 1.0)
        requests = [recency_turn() if (i // 5000) % 2 == 0 else pick() for i in range(30000)]

    with open(out, "w") as f:
        for i, chain in enumerate(requests):
            f.write(json.dumps({"timestamp": i * 100,
                                "input_length": 512 * len(chain) - rng.randint(0, 511),
                                "output_length": 100, "hash_ids": chain}) + "\n")
    print(f"{out}: {len(requests)} requests, {next_id[0]} distinct blocks")


if __name__ == "__main__":
    main()
