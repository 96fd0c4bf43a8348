#!/usr/bin/env bash
# p99 attention-output rel L2 of kivi4 g64, int8 and fp8 on six generator settings
# (docs/results-codec.md), one markdown row each. usage: generator_settings.sh build/bin/kvhub-codec
set -euo pipefail
B="${1:?usage: generator_settings.sh KVHUB_CODEC_BIN}"
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
row() {
  local name="$1"; shift
  "$B" gen "$@" "$D/g.kvraw" >/dev/null
  local k i f
  k=$("$B" eval --codec kivi4 --group 64 "$D/g.kvraw" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["quality"]["attn_rel_l2"]["p99"])')
  i=$("$B" eval --codec int8 "$D/g.kvraw" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["quality"]["attn_rel_l2"]["p99"])')
  f=$("$B" eval --codec fp8 "$D/g.kvraw" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["quality"]["attn_rel_l2"]["p99"])')
  /usr/bin/python3 -c "k,i,f=$k,$i,$f; print('| $name | %.3g | %.3g | **%.3f** | %.3g | %.2f |' % (k,i,i/k,f,f/k))"
}
row "default, first block (sink)"
row "--base-position 256" --base-position 256
row "--base-position 4096" --base-position 4096
row "--query-outlier 0.1" --query-outlier 0.1
row "8 x 32 x 64, interleaved, base 10000" --layers 8 --kv-heads 32 --head-dim 64 --pairing interleaved --rope-base 10000
row "8 x 4 x 64, seed 7" --kv-heads 4 --head-dim 64 --layers 8 --seed 7 --outlier-pairs 2
