#include "codec/cuda/block_plan.h"

#include <cmath>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "codec/rope.h"
#include "common/hash.h"

namespace kvhub::codec::cuda {
namespace {

static_assert(kCenteredKeyMaxBits == kvhub::codec::kCenteredKeyMaxBf16,
              "the CUDA and CPU encoders must refuse the same keys");

SegLayoutPod Pod(const SegLayout& l) {
  return {l.sink_bytes, l.scale_off, l.scale_bytes, l.zero_off,
          l.zero_bytes, l.codes_off, l.codes_bytes, l.size};
}

uint64_t StatCount(CodecId c, const KvShape& sh, bool is_value, uint32_t g) {
  const uint64_t T = sh.tokens, H = sh.kv_heads, D = sh.head_dim;
  switch (c) {
    case CodecId::kFp8: return H;
    case CodecId::kInt8: return T * H;
    case CodecId::kKivi4:
    case CodecId::kKivi2:
      return is_value ? T * H * ((D + g - 1) / g) : ((T + g - 1) / g) * H * D;
    default: return 0;
  }
}

void FillSegments(BlockPlan* plan) {
  const BlockHeader& h = plan->header;
  for (int v = 0; v < 2; ++v) {
    plan->layout[v] = Layout(h.codec, h.shape, v == 1, h.group_size, h.sink_tokens);
    plan->stat_count[v] = StatCount(h.codec, h.shape, v == 1, h.group_size);
  }
  plan->seg_off.resize(h.segment_count());
  uint64_t pos = h.table_bytes();
  for (uint32_t s = 0; s < h.segment_count(); ++s) {
    plan->seg_off[s] = Align16(pos);
    pos = plan->seg_off[s] + plan->layout[s % 2].size;
  }
  plan->header.body_bytes = pos;
}

}  // namespace

bool HasGpuKernels(CodecId c) {
  return c == CodecId::kFp8 || c == CodecId::kInt8 || c == CodecId::kKivi4 || c == CodecId::kKivi2;
}

BlockGeom BlockPlan::Geom(const uint64_t* seg_off_ptr, const int32_t* page_ids,
                          uint32_t page_tokens, const float* rope_cs_ptr) const {
  BlockGeom g{};
  g.layers = header.shape.layers;
  g.tokens = header.shape.tokens;
  g.heads = header.shape.kv_heads;
  g.dim = header.shape.head_dim;
  g.codec = static_cast<uint8_t>(header.codec);
  g.group = header.group_size;
  g.sinks = header.sink_tokens;
  g.layout[0] = Pod(layout[0]);
  g.layout[1] = Pod(layout[1]);
  g.stat_count[0] = stat_count[0];
  g.stat_count[1] = stat_count[1];
  g.seg_off = seg_off_ptr;
  g.page_ids = page_ids;
  g.page_tokens = page_tokens;
  g.rope_cs = rope_cs.empty() ? nullptr : rope_cs_ptr;
  g.rope_step = rope_step;
  g.rope_interleaved = header.rope_pairing == RopePairing::kInterleaved ? 1 : 0;
  return g;
}

absl::StatusOr<BlockPlan> PlanEncode(const PagedShape& pages, const PagedEncodeParams& p) {
  if (!HasGpuKernels(p.codec.codec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gpu encode: codec ", CodecName(p.codec.codec),
        " has no CUDA kernels (fp8, int8, kivi4, kivi2 do; lossless runs on the CPU)"));
  }
  if (auto s = p.codec.Validate(); !s.ok()) return s;
  KvShape sh{p.layers, pages.kv_heads, pages.head_dim, p.tokens, DType::kBf16};
  if (auto s = sh.Validate(); !s.ok()) return s;
  if (sh.RawBytes() > BlockHeader::kMaxRawBytes) {
    return absl::InvalidArgumentError("gpu encode: block larger than the format limit");
  }
  if (pages.page_tokens == 0 || pages.page_tokens > kMaxPageTokens || pages.num_pages == 0) {
    return absl::InvalidArgumentError(absl::StrCat("gpu encode: page_tokens must be in 1..", kMaxPageTokens,
                                                   " and num_pages > 0"));
  }
  if (!std::isfinite(p.rope_base) || p.rope_base <= 0 ||
      (p.rope_pairing != RopePairing::kNeox && p.rope_pairing != RopePairing::kInterleaved)) {
    return absl::InvalidArgumentError("gpu encode: bad rope_base or rope_pairing");
  }
  if (auto s = CheckPosition(p.base_position, "gpu encode: base_position"); !s.ok()) return s;
  BlockPlan plan;
  BlockHeader& h = plan.header;
  h.codec = p.codec.codec;
  h.flags = p.codec.keys_pre_rope ? kFlagKeysPreRope : 0;
  h.shape = sh;
  h.base_position = p.base_position;
  h.rope_base = p.rope_base;
  h.rope_pairing = p.rope_pairing;
  h.fingerprint = p.fingerprint;
  h.raw_bytes = sh.RawBytes();
  if (IsKivi(h.codec)) h.group_size = static_cast<uint16_t>(p.codec.group_size);
  h.sink_tokens =
      static_cast<uint16_t>(SinksInBlock(h.codec, p.codec.sink_tokens, p.base_position, sh.tokens));
  if (p.codec.keys_pre_rope) {
    auto cs = RopeCosSinTable(sh.tokens, sh.head_dim, RopeParams{p.rope_base, p.rope_pairing},
                              -p.base_position, -1);
    if (!cs.ok()) return cs.status();
    plan.rope_cs = *std::move(cs);
    plan.rope_step = 1;
  }
  FillSegments(&plan);
  return plan;
}

absl::Status FinishBlock(const BlockPlan& plan, absl::Span<uint8_t> block) {
  if (block.size() != plan.total_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("gpu encode: block buffer is ", block.size(),
                                                   " bytes, the plan needs ", plan.total_bytes()));
  }
  uint8_t* body = block.data() + BlockHeader::kSize;
  for (uint32_t s = 0; s < plan.header.segment_count(); ++s) {
    uint8_t* e = body + uint64_t{s} * BlockHeader::kSegmentEntrySize;
    PutU64(e, plan.seg_off[s]);
    PutU64(e + 8, plan.layout[s % 2].size);
  }
  BlockHeader h = plan.header;
  h.body_checksum = Xxh3_64(body, h.body_bytes);
  h.Serialize(block.data());
  return absl::OkStatus();
}

absl::StatusOr<BlockPlan> PlanDecode(absl::Span<const uint8_t> block, const DecodeOptions& opt) {
  auto h = ParseHeader(block);
  if (!h.ok()) return h.status();
  if (!HasGpuKernels(h->codec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gpu decode: codec ", CodecName(h->codec),
        " has no CUDA kernels (fp8, int8, kivi4, kivi2 do; decode it with codec::Decode)"));
  }
  auto segs = ParseBlock(block, *h, opt.verify_checksum);
  if (!segs.ok()) return segs.status();
  BlockPlan plan;
  plan.header = *h;
  FillSegments(&plan);
  for (uint32_t s = 0; s < h->segment_count(); ++s) {
    if ((*segs)[s].offset != plan.seg_off[s] || (*segs)[s].size != plan.layout[s % 2].size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kv block: segment ", s, " at ", (*segs)[s].offset, "+", (*segs)[s].size, ", ",
          CodecName(h->codec), " needs ", plan.seg_off[s], "+", plan.layout[s % 2].size));
    }
    // The kernels use the stored scales, centres and zeros as they are: check them
    // here, on the host copy that is uploaded, as codec::Decode does (DATA_LOSS).
    if (auto st = CheckSegmentStats(*h, s, block.data() + BlockHeader::kSize + plan.seg_off[s]);
        !st.ok()) {
      return st;
    }
  }
  if (opt.target_position.has_value()) {
    if (auto s = CheckPosition(*opt.target_position, "gpu decode: target_position"); !s.ok()) return s;
  }
  const RopeParams rope{h->rope_base, h->rope_pairing};
  const int64_t target = opt.target_position.value_or(h->base_position);
  if (h->keys_pre_rope()) {
    auto cs = RopeCosSinTable(h->shape.tokens, h->shape.head_dim, rope, target, 1);
    if (!cs.ok()) return cs.status();
    plan.rope_cs = *std::move(cs);
    plan.rope_step = 1;
  } else if (target != h->base_position) {
    int64_t delta;
    if (__builtin_sub_overflow(target, h->base_position, &delta)) {
      return absl::InvalidArgumentError("decode: position delta overflows");
    }
    auto cs = RopeCosSinTable(1, h->shape.head_dim, rope, delta, 0);
    if (!cs.ok()) return cs.status();
    plan.rope_cs = *std::move(cs);
    plan.rope_step = 0;
  }
  return plan;
}

absl::Status ValidatePages(const PagedShape& pages, absl::Span<const int32_t> page_ids,
                           uint32_t tokens, uint32_t heads, uint32_t dim, bool for_write) {
  // Above 65536 tokens a page count (tokens + page_tokens - 1) / page_tokens can wrap
  // to 0, and an empty page list would pass for a block that needs pages.
  if (pages.page_tokens == 0 || pages.page_tokens > kMaxPageTokens || pages.num_pages == 0) {
    return absl::InvalidArgumentError(absl::StrCat("paged kv: page_tokens must be in 1..", kMaxPageTokens,
                                                   " and num_pages > 0"));
  }
  if (pages.kv_heads != heads || pages.head_dim != dim) {
    return absl::InvalidArgumentError(absl::StrCat("paged kv: cache has ", pages.kv_heads, "x",
                                                   pages.head_dim, " per token, block ", heads,
                                                   "x", dim));
  }
  const uint32_t need = PagesForTokens(tokens, pages.page_tokens);
  if (page_ids.size() != need) {
    return absl::InvalidArgumentError(absl::StrCat("paged kv: ", tokens, " tokens in pages of ",
                                                   pages.page_tokens, " need ", need,
                                                   " page ids, got ", page_ids.size()));
  }
  absl::flat_hash_set<int32_t> seen;
  for (size_t i = 0; i < page_ids.size(); ++i) {
    const int32_t id = page_ids[i];
    if (id < 0 || static_cast<uint32_t>(id) >= pages.num_pages) {
      return absl::InvalidArgumentError(absl::StrCat("paged kv: page id ", id, " at index ", i,
                                                     " outside [0, ", pages.num_pages, ")"));
    }
    if (for_write && !seen.insert(id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("paged kv: page id ", id, " appears twice; decode would write it twice"));
    }
  }
  return absl::OkStatus();
}

uint8_t AllAligned16(const std::vector<uint16_t*>& ptrs) {
  for (const uint16_t* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 0;
  }
  return 1;
}

absl::Status KernelErrorStatus(uint32_t bits, CodecId codec) {
  if (bits == 0) return absl::OkStatus();
  if (bits & kErrNonFinite) {
    return absl::InvalidArgumentError(absl::StrCat(
        "codec ", CodecName(codec), ": input contains inf or NaN (only lossless/raw keep them)"));
  }
  if (bits & kErrKeyRange) return CenteredKeyRangeError(codec);
  return absl::InvalidArgumentError(
      "codec kivi: input has inf/NaN, or a group's minimum or range exceeds fp16 (|x| >= 65520); "
      "use int8, fp8 or lossless for this data");
}

absl::Status DecodeKernelErrorStatus(uint32_t error_bits) {
  if (error_bits == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      "rope: a key is inf or NaN after rotation (a key that is not finite, or one so large that rotating "
      "it overflows bf16); the destination pages hold partial output");
}

}  // namespace kvhub::codec::cuda
