#!/usr/bin/python3
"""Checks the pure-Python key implementation against tests/vectors/block_keys.json."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from kvhub import keys  # noqa: E402


def main():
    with open(os.path.join(os.path.dirname(__file__), "block_keys.json"), encoding="utf-8") as f:
        vec = json.load(f)
    failed = passed = 0
    for s in vec["specs"]:
        ok = (keys.canonical_spec_text(s["spec"]) == s["canonical"]
              and keys.u128_hex(keys.fingerprint(s["spec"])) == s["fingerprint"])
        passed, failed = passed + ok, failed + (not ok)
        if not ok:
            print("FAIL fingerprint", s["canonical"])
    for i, c in enumerate(vec["cases"]):
        got = [keys.u128_hex(k) for k in keys.block_keys(c["namespace"], c["spec"], c["tokens"])]
        chunk = keys.u128_hex(keys.chunk_key(c["namespace"], c["spec"], c["tokens"]))
        ok = got == c["block_keys"] and chunk == c["chunk_key"] and \
            len(got) == len(c["tokens"]) // c["spec"]["block_tokens"]
        passed, failed = passed + ok, failed + (not ok)
        if not ok:
            print("FAIL case", i, c["namespace"], len(c["tokens"]))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
