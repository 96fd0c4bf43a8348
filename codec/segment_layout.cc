#include "codec/segment_layout.h"

#include <algorithm>

namespace kvhub::codec {

SegLayout Layout(CodecId codec, const KvShape& sh, bool is_value, uint32_t group, uint32_t sinks) {
  SegLayout L;
  const uint64_t n = sh.SegmentElements();
  const uint64_t T = sh.tokens, H = sh.kv_heads, D = sh.head_dim;
  switch (codec) {
    case CodecId::kRaw:
    case CodecId::kLossless:
      L.codes_bytes = sh.SegmentBytes();
      break;
    case CodecId::kFp8:
    case CodecId::kInt8:
      L.sink_bytes = 2ull * sinks * H * D;
      L.scale_bytes = codec == CodecId::kFp8 ? 4 * H : 4 * T * H;
      if (!is_value) L.zero_bytes = 2 * H * D;  // key channel centres (bf16)
      L.codes_bytes = n;
      break;
    case CodecId::kKivi4:
    case CodecId::kKivi2: {
      L.sink_bytes = 2ull * sinks * H * D;
      uint64_t stats = is_value ? T * H * ((D + group - 1) / group) : ((T + group - 1) / group) * H * D;
      L.scale_bytes = L.zero_bytes = 2 * stats;
      L.codes_bytes = (n * KiviBits(codec) + 7) / 8;
      break;
    }
  }
  L.scale_off = Align16(L.sink_bytes);
  L.zero_off = L.scale_off + Align16(L.scale_bytes);
  L.codes_off = L.zero_bytes ? L.zero_off + Align16(L.zero_bytes) : L.zero_off;
  if (L.scale_bytes == 0) L.codes_off = L.sink_bytes == 0 ? 0 : Align16(L.sink_bytes);
  L.size = L.codes_off + L.codes_bytes;
  return L;
}

uint32_t SinksInBlock(CodecId codec, uint32_t sink_tokens, int64_t base_position, uint32_t tokens) {
  if (!HasSinks(codec) || base_position >= static_cast<int64_t>(sink_tokens)) return 0;
  int64_t s = static_cast<int64_t>(sink_tokens) - std::max<int64_t>(base_position, 0);
  return static_cast<uint32_t>(std::min<int64_t>(s, tokens));
}

}  // namespace kvhub::codec
