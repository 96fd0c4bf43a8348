#!/usr/bin/python3
"""Writes tests/vectors/block_keys.json from the pure-Python implementation.

Run once when adding vectors; check_block_keys.py (run by `make test`) and the
C++ test common/keys_test.cc must reproduce every value. Never regenerate to
make a failing implementation pass: a changed key is a broken cache.
"""
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from kvhub import keys  # noqa: E402

SPECS = [
    dict(model="llama3-8b", layers=32, kv_heads=8, head_dim=128, dtype="bf16", rope_base=500000.0,
         rope_pairing="neox", tp_rank=0, tp_world=1, block_tokens=256),
    dict(model="qwen2.5-72b", layers=80, kv_heads=4, head_dim=128, dtype="fp16", rope_base=1000000.0,
         rope_pairing="neox", tp_rank=1, tp_world=2, block_tokens=16),
    dict(model="gpt-j-6b", layers=28, kv_heads=16, head_dim=256, dtype="fp32", rope_base=10000.0,
         rope_pairing="interleaved", tp_rank=0, tp_world=1, block_tokens=4),
    dict(model="tiny", layers=1, kv_heads=1, head_dim=1, dtype="bf16", rope_base=0.5,
         rope_pairing="interleaved", tp_rank=3, tp_world=4, block_tokens=1),
]
NAMESPACES = ["default", "tenant-a", "public/shared", "名前空間"]


def main():
    rng = random.Random(20261122)
    cases = []
    for si, spec in enumerate(SPECS):
        b = spec["block_tokens"]
        lengths = sorted({0, 1, b - 1 if b > 1 else 0, b, b + 1, 2 * b, 3 * b + b // 2, 5 * b})
        for ns in NAMESPACES[: 2 + si % 3]:
            for n in lengths:
                tokens = [rng.randrange(-2**31, 2**31) if rng.random() < 0.05 else rng.randrange(0, 152064)
                          for _ in range(n)]
                cases.append(dict(
                    spec=spec, namespace=ns, tokens=tokens,
                    block_keys=[keys.u128_hex(k) for k in keys.block_keys(ns, spec, tokens)],
                    chunk_key=keys.u128_hex(keys.chunk_key(ns, spec, tokens))))
    out = dict(
        description="DESIGN §2 test vectors: fingerprint, block keys (full blocks only) and chunk key",
        specs=[dict(spec=s, canonical=keys.canonical_spec_text(s),
                    fingerprint=keys.u128_hex(keys.fingerprint(s))) for s in SPECS],
        cases=cases)
    path = os.path.join(os.path.dirname(__file__), "block_keys.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", path, len(cases), "cases")


if __name__ == "__main__":
    main()
