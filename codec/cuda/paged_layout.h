#pragma once
// Index math of a vLLM-style paged KV cache, shared by the CUDA kernels and
// the host code and tests. One layer's K (or V) cache is
// [num_pages][page_tokens][kv_heads][head_dim] bf16; a block of T tokens
// occupies pages page_ids[0 .. ceil(T / page_tokens)), token t in page
// page_ids[t / page_tokens], slot t % page_tokens. Header-only; no CUDA
// dependency when compiled by a host compiler.

#include <cstdint>

#include "codec/cuda/element_math.h"

namespace kvhub::codec::cuda {

inline constexpr uint32_t kMaxPageTokens = 65536;

struct PagedShape {
  uint32_t num_pages = 0;
  uint32_t page_tokens = 0;  // tokens per page (vLLM block_size), 1 .. kMaxPageTokens (checked)
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;

  uint64_t TokenElements() const { return uint64_t{kv_heads} * head_dim; }
  uint64_t PageElements() const { return uint64_t{page_tokens} * TokenElements(); }
  uint64_t LayerElements() const { return uint64_t{num_pages} * PageElements(); }
};

// Pages a block of `tokens` tokens spans.
KVHUB_HD uint32_t PagesForTokens(uint32_t tokens, uint32_t page_tokens) {
  return (tokens + page_tokens - 1) / page_tokens;
}

// Element offset, inside one layer's K or V cache, of element e (< heads *
// head_dim, i.e. [head][dim] flattened) of block token t.
KVHUB_HD uint64_t PagedElementOffset(const int32_t* page_ids, uint32_t page_tokens,
                                     uint64_t token_elements, uint32_t t, uint64_t e) {
  const uint64_t page = static_cast<uint32_t>(page_ids[t / page_tokens]);
  return (page * page_tokens + t % page_tokens) * token_elements + e;
}

}  // namespace kvhub::codec::cuda
