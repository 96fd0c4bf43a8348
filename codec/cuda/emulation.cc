#include "codec/cuda/emulation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kvhub::codec::cuda {
namespace {

absl::Status CheckCache(const PagedKv& cache, uint32_t layers) {
  if (cache.k.size() != layers || cache.v.size() != layers) {
    return absl::InvalidArgumentError(absl::StrCat("paged kv: cache has ", cache.k.size(), "/",
                                                   cache.v.size(), " K/V layers, block ", layers));
  }
  for (uint32_t l = 0; l < layers; ++l) {
    if (cache.k[l] == nullptr || cache.v[l] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("paged kv: layer ", l, " pointer is null"));
    }
  }
  return absl::OkStatus();
}

std::vector<uint16_t*> Interleave(const PagedKv& cache) {
  std::vector<uint16_t*> p;
  for (size_t l = 0; l < cache.k.size(); ++l) {
    p.push_back(cache.k[l]);
    p.push_back(cache.v[l]);
  }
  return p;
}

}  // namespace

absl::Status EmulateEncodeFromPages(const PagedKv& cache, absl::Span<const int32_t> page_ids,
                                    const PagedEncodeParams& params, std::vector<uint8_t>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("encode: out is null");
  auto plan = PlanEncode(cache.shape, params);
  if (!plan.ok()) return plan.status();
  if (auto s = CheckCache(cache, params.layers); !s.ok()) return s;
  if (auto s = ValidatePages(cache.shape, page_ids, params.tokens, cache.shape.kv_heads,
                             cache.shape.head_dim, false);
      !s.ok()) {
    return s;
  }
  out->assign(plan->total_bytes(), 0xEE);  // poison: every body byte must be written
  std::vector<uint16_t*> src = Interleave(cache);
  std::vector<float> inv(plan->scratch_floats()), zero(plan->scratch_floats());
  uint32_t error = 0;
  EncodeCtx c{plan->Geom(plan->seg_off.data(), page_ids.data(), cache.shape.page_tokens,
                         plan->rope_cs.data()),
              src.data(), out->data() + BlockHeader::kSize, inv.data(), zero.data(), &error,
              AllAligned16(src)};
  const BlockGeom& g = c.g;
  const uint32_t nseg = 2 * g.layers;
  const uint64_t n = g.SegElements();
  for (uint32_t s = 0; s < nseg; ++s) EncodeZeroPads(c, s);
  const uint64_t sink_elems = g.SinkElements();
  for (uint32_t s = 0; s < nseg; ++s) {
    for (uint64_t i = 0; i < sink_elems; ++i) EncodeSinkElement(c, s, i);
  }
  if (g.codec == kCodecFp8 || g.codec == kCodecInt8) {
    for (uint32_t s = 0; s < nseg; ++s) {
      if (!g.Centered(s)) continue;
      for (uint64_t k = 0; k < g.RowElements(); ++k) KeyMidStat(c, s, k);
    }
  }
  switch (g.codec) {
    case kCodecFp8:
      for (uint32_t s = 0; s < nseg; ++s) {
        for (uint32_t h = 0; h < g.heads; ++h) {
          uint32_t m = 0;
          for (uint32_t t = g.sinks; t < g.tokens; ++t) {
            for (uint32_t d = 0; d < g.dim; ++d) {
              m = std::max(m, AmaxBits(c, s, (uint64_t{t} * g.heads + h) * g.dim + d));
            }
          }
          Fp8Finish(c, s, h, m);
        }
        for (uint64_t i = 0; i < n; ++i) Fp8QuantElement(c, s, i);
      }
      break;
    case kCodecInt8:
      for (uint32_t s = 0; s < nseg; ++s) {
        for (uint64_t r = 0; r < uint64_t{g.tokens} * g.heads; ++r) {
          uint32_t m = 0;
          if (r >= uint64_t{g.sinks} * g.heads) {
            for (uint32_t d = 0; d < g.dim; ++d) m = std::max(m, AmaxBits(c, s, r * g.dim + d));
          }
          float iv = Int8Finish(c, s, r, m);
          for (uint32_t d = 0; d < g.dim; ++d) Int8QuantElement(c, s, r * g.dim + d, iv);
        }
      }
      break;
    default: {
      for (uint32_t s = 0; s < nseg; ++s) {
        for (uint64_t k = 0; k < g.stat_count[s % 2]; ++k) {
          if (s % 2 == 0) {
            KiviKeyStat(c, s, k);
          } else {
            KiviValueStat(c, s, k);
          }
        }
        for (uint64_t u = 0; u < c.KiviQuantUnits(s); ++u) {
          if (c.Chunked()) {
            KiviQuantChunk8(c, s, u);
          } else {
            KiviQuantByte(c, s, u);
          }
        }
      }
    }
  }
  if (auto st = KernelErrorStatus(error, params.codec.codec); !st.ok()) return st;
  return FinishBlock(*plan, absl::MakeSpan(*out));
}

absl::Status EmulateDecodeToPages(absl::Span<const uint8_t> block, const PagedKv& cache,
                                  absl::Span<const int32_t> page_ids, const DecodeOptions& opt) {
  auto plan = PlanDecode(block, opt);
  if (!plan.ok()) return plan.status();
  const KvShape& sh = plan->header.shape;
  if (auto s = CheckCache(cache, sh.layers); !s.ok()) return s;
  if (auto s = ValidatePages(cache.shape, page_ids, sh.tokens, sh.kv_heads, sh.head_dim, true);
      !s.ok()) {
    return s;
  }
  std::vector<uint16_t*> dst = Interleave(cache);
  uint32_t error = 0;
  DecodeCtx c{plan->Geom(plan->seg_off.data(), page_ids.data(), cache.shape.page_tokens,
                         plan->rope_cs.data()),
              block.data() + BlockHeader::kSize, dst.data(), AllAligned16(dst), &error};
  for (uint32_t s = 0; s < 2 * sh.layers; ++s) {
    for (uint64_t u = 0; u < c.Units(s); ++u) DecodeUnit(c, s, u);
  }
  return DecodeKernelErrorStatus(error);
}

}  // namespace kvhub::codec::cuda
