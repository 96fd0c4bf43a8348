#!/usr/bin/env bash
# End-to-end check of the kvhub-codec CLI: gen -> encode -> decode -> eval, and clean failures.
set -euo pipefail
B="$1"
D="$(mktemp -d)"
trap 'rm -rf "$D"' EXIT
"$B" gen --layers 2 --kv-heads 2 --head-dim 32 --tokens 64 "$D/a.kvraw"
test -s "$D/a.kvraw.kvq"
for c in raw lossless fp8 int8 kivi4 kivi2; do
  "$B" encode --codec "$c" --group 32 "$D/a.kvraw" "$D/a.$c.kvb"
  "$B" decode "$D/a.$c.kvb" "$D/a.$c.out"
  "$B" inspect "$D/a.$c.kvb" | grep -q "\"codec\":\"$c\""
done
# raw and lossless decode to the identical file.
cmp "$D/a.kvraw" "$D/a.raw.out"
cmp "$D/a.kvraw" "$D/a.lossless.out"
# eval prints one JSON object per codec; lossless is bit-exact with zero error.
"$B" eval --codec all "$D/a.kvraw" > "$D/eval.json"
test "$(wc -l < "$D/eval.json")" -eq 7
grep '"codec":"lossless"' "$D/eval.json" | grep -q '"bit_exact":true'
grep '"codec":"kivi4"' "$D/eval.json" | grep -q '"proxy_queries":false'
# Re-rotation to another position and pre-RoPE storage.
"$B" encode --codec kivi4 --pre-rope "$D/a.kvraw" "$D/p.kvb"
"$B" decode --target-position 1000 "$D/p.kvb" "$D/p.out"
# Failures: unknown codec, truncated block, missing file, bad usage.
! "$B" encode --codec bogus "$D/a.kvraw" "$D/x.kvb" 2>/dev/null
head -c 1000 "$D/a.kivi4.kvb" > "$D/t.kvb"
! "$B" decode "$D/t.kvb" "$D/t.out" 2>/dev/null
! "$B" decode "$D/missing.kvb" "$D/t.out" 2>/dev/null
! "$B" 2>/dev/null
echo "kvhub-codec CLI test passed"
