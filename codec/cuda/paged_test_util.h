#pragma once
// Test support for the CUDA codec tests (emulation_test.cc on the host,
// gpu_codec_test.cc on a device): a host paged KV cache with key-like random
// contents, the contiguous gather the CPU codecs take, and the shapes both
// tests cover (element-kernel shapes and tiled-kernel shapes).

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "codec/cuda/block_plan.h"
#include "codec/numeric.h"

namespace kvhub::codec::cuda {

// A host paged cache with random contents and a random page assignment.
struct HostCache {
  PagedShape shape;
  std::vector<std::vector<uint16_t>> k, v;
  std::vector<int32_t> page_ids;

  PagedKv View() {
    PagedKv p{shape, {}, {}};
    for (auto& x : k) p.k.push_back(x.data());
    for (auto& x : v) p.v.push_back(x.data());
    return p;
  }
};

inline uint16_t RandomBf16(std::mt19937_64& rng, float scale) {
  std::normal_distribution<float> nd(0.0f, scale);
  return FloatToBf16(nd(rng));
}

inline HostCache MakeCache(uint32_t layers, uint32_t pages, uint32_t page_tokens, uint32_t heads,
                    uint32_t dim, uint32_t tokens, uint64_t seed) {
  std::mt19937_64 rng(seed);
  HostCache c;
  c.shape = {pages, page_tokens, heads, dim};
  const size_t n = c.shape.LayerElements();
  for (uint32_t l = 0; l < layers; ++l) {
    for (auto* vec : {&c.k, &c.v}) {
      std::vector<uint16_t> x(n);
      // Per-channel scales with a few outlier channels of consistent sign,
      // like real keys (the fp8/int8 key centres move them to 0).
      for (size_t i = 0; i < n; ++i) {
        uint32_t ch = static_cast<uint32_t>(i % dim);
        float s = (ch % 17 == 3) ? 12.0f : 0.5f + 0.1f * static_cast<float>(ch % 5);
        x[i] = RandomBf16(rng, s);
        if (ch % 17 == 3) x[i] = FloatToBf16(Bf16ToFloat(x[i]) + 40.0f);
      }
      vec->push_back(std::move(x));
    }
  }
  std::vector<int32_t> all(pages);
  for (uint32_t i = 0; i < pages; ++i) all[i] = static_cast<int32_t>(i);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(PagesForTokens(tokens, page_tokens));
  c.page_ids = all;
  return c;
}

// Contiguous [layer][k|v][token][head][dim] copy of the block, gathered page by page.
inline std::vector<uint8_t> Gather(const HostCache& c, uint32_t tokens) {
  const uint32_t L = static_cast<uint32_t>(c.k.size());
  const size_t td = c.shape.TokenElements();
  std::vector<uint16_t> out;
  for (uint32_t l = 0; l < L; ++l) {
    for (const auto* layer : {&c.k[l], &c.v[l]}) {
      for (uint32_t t = 0; t < tokens; ++t) {
        const int32_t page = c.page_ids[t / c.shape.page_tokens];
        const size_t slot = t % c.shape.page_tokens;
        const uint16_t* row = layer->data() + (size_t(page) * c.shape.page_tokens + slot) * td;
        out.insert(out.end(), row, row + td);
      }
    }
  }
  std::vector<uint8_t> bytes(out.size() * 2);
  std::memcpy(bytes.data(), out.data(), bytes.size());
  return bytes;
}

struct Case {
  CodecId codec;
  uint32_t layers, heads, dim, tokens, page_tokens;
  uint32_t group;
  uint32_t sinks;
  int64_t base;
  bool pre_rope;
  RopePairing pairing;
};

inline std::string Name(const Case& k) {
  return std::string(CodecName(k.codec)) + " L" + std::to_string(k.layers) + " H" +
         std::to_string(k.heads) + " D" + std::to_string(k.dim) + " T" + std::to_string(k.tokens) +
         " P" + std::to_string(k.page_tokens) + " G" + std::to_string(k.group) + " S" +
         std::to_string(k.sinks) + " base" + std::to_string(k.base) + (k.pre_rope ? " pre-rope" : "") +
         (k.pairing == RopePairing::kInterleaved ? " interleaved" : "");
}

inline std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8, CodecId::kKivi4, CodecId::kKivi2}) {
    cases.push_back({c, 2, 4, 64, 64, 16, 32, 1, 0, false, RopePairing::kNeox});
    cases.push_back({c, 1, 3, 37, 45, 7, 32, 4, 0, false, RopePairing::kNeox});     // odd dim, partial pages/groups
    cases.push_back({c, 2, 2, 130, 70, 16, 64, 1, 512, false, RopePairing::kNeox});  // partial value groups
    cases.push_back({c, 1, 2, 32, 33, 5, 32, 2, 1, true, RopePairing::kNeox});       // pre-RoPE, one sink
    cases.push_back({c, 1, 1, 16, 40, 8, 128, 8, 0, true, RopePairing::kInterleaved});
    cases.push_back({c, 1, 2, 128, 256, 16, 128, 1, 256, false, RopePairing::kInterleaved});
    // Shapes for the tiled kivi kernels (and their fallbacks).
    cases.push_back({c, 2, 8, 128, 256, 16, 64, 1, 0, false, RopePairing::kNeox});   // serving shape
    // A 40 KiB tile: under 48 KiB, over 48 KiB less the encode kernel's 9 KiB of
    // statics (it failed to launch); before any larger tile raises the limit.
    cases.push_back({c, 1, 2, 256, 80, 16, 128, 1, 0, false, RopePairing::kNeox});
    cases.push_back({c, 1, 2, 256, 200, 32, 128, 3, 0, true, RopePairing::kNeox});   // D 256, partial group
    cases.push_back({c, 1, 2, 8, 50, 4, 32, 40, 0, false, RopePairing::kNeox});      // D 8, all-sink group
    cases.push_back({c, 1, 2, 96, 64, 16, 32, 1, 0, false, RopePairing::kNeox});     // D/8 not a power of 2
  }
  return cases;
}

inline PagedEncodeParams Params(const Case& k) {
  PagedEncodeParams p;
  p.codec.codec = k.codec;
  p.codec.group_size = k.group;
  p.codec.sink_tokens = k.sinks;
  p.codec.keys_pre_rope = k.pre_rope;
  p.layers = k.layers;
  p.tokens = k.tokens;
  p.base_position = k.base;
  p.rope_base = 500000.0;
  p.rope_pairing = k.pairing;
  p.fingerprint = U128{0x0123456789abcdefull, 0xfedcba9876543210ull};
  return p;
}

inline KvView ViewOf(const Case& k, const PagedEncodeParams& p, const std::vector<uint8_t>& raw) {
  KvView v;
  v.shape = {k.layers, k.heads, k.dim, k.tokens, DType::kBf16};
  v.data = raw.data();
  v.size = raw.size();
  v.base_position = p.base_position;
  v.rope_base = p.rope_base;
  v.rope_pairing = p.rope_pairing;
  v.fingerprint = p.fingerprint;
  return v;
}

// Cases whose sink token 0 holds bf16's largest finite key (0x7F7F) in every
// channel: it encodes, and decodes in place, but moving it to another position
// overflows bf16 (codec/rope.cc refuses that). Element and tiled shapes, both
// pairings.
inline std::vector<Case> HugeSinkCases() {
  std::vector<Case> cases;
  for (CodecId c : {CodecId::kFp8, CodecId::kInt8, CodecId::kKivi4, CodecId::kKivi2}) {
    for (RopePairing r : {RopePairing::kNeox, RopePairing::kInterleaved}) {
      cases.push_back({c, 1, 2, 128, 64, 16, 64, 1, 0, false, r});
      cases.push_back({c, 1, 3, 40, 20, 8, 32, 2, 0, false, r});
    }
  }
  return cases;
}
inline void SetHugeSinkKeys(HostCache* c) {
  const size_t td = c->shape.TokenElements();
  uint16_t* row = c->k[0].data() + size_t(c->page_ids[0]) * c->shape.page_tokens * td;
  std::fill(row, row + td, uint16_t{0x7F7F});
}

}  // namespace kvhub::codec::cuda
