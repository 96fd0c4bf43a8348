#!/usr/bin/python3
"""Ratio/quality table for docs/results-codec.md from `kvhub-codec eval` JSON.

usage: quality_table.py KVHUB_CODEC_BIN FILE.kvraw [extra eval args...]
Runs `eval --codec all` at groups 32/64/128 and prints a markdown table.
"""
import json
import subprocess
import sys

if len(sys.argv) < 3:
    sys.exit("usage: quality_table.py KVHUB_CODEC_BIN FILE.kvraw [extra eval args...]")
binary, path, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = []
for group in (32, 64, 128):
    try:
        run = subprocess.run([binary, "eval", "--codec", "all", "--group", str(group), *extra, path],
                             capture_output=True, text=True)
    except OSError as e:
        sys.exit("quality_table: cannot run %s: %s" % (binary, e))
    if run.returncode != 0:
        sys.exit("quality_table: %s eval failed (exit %d): %s" % (binary, run.returncode, run.stderr.strip()))
    out = run.stdout
    for line in out.splitlines():
        r = json.loads(line)
        kivi = r["codec"].startswith("kivi") or r["codec"].startswith("int4")
        if group != 64 and not kivi:
            continue
        rows.append(r)

def f(x):
    return "0" if x == 0 else f"{x:.3g}"

print("| codec | group | ratio | attn rel L2 median / p99 | 1-cos median / p99 | KL median / p99 | K rel L2 median / p99 | V rel L2 median / p99 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    q = r["quality"]
    kivi = r["codec"].startswith("kivi") or r["codec"].startswith("int4")
    ratio = "-" if r["ratio"] is None else f'{r["ratio"]:.3f}' + (" (bit-exact)" if r["bit_exact"] else "")
    cells = [r["codec"], str(r["group"]) if kivi else "-", ratio]
    for k in ("attn_rel_l2", "one_minus_cos", "kl", "k_rel_l2", "v_rel_l2"):
        cells.append(f'{f(q[k]["median"])} / {f(q[k]["p99"])}')
    print("| " + " | ".join(cells) + " |")
