#pragma once
// Compression as capacity (docs/replay.md, "Byte budgets"): how many tokens a
// DRAM budget holds per codec, from the codec library's exact encoded block
// sizes (codec::EncodedSize) for a model spec.
// Thread safety: pure functions.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_spec.h"

namespace kvhub::replay {

struct CodecBlockSize {
  std::string codec;
  uint64_t raw_bytes = 0;      // bf16 K/V of one block
  uint64_t encoded_bytes = 0;  // a block not at position 0 (no attention-sink tokens)
  uint64_t first_bytes = 0;    // a chain's first block (lossy codecs keep sink tokens in bf16)
  uint64_t store_chunk_bytes = 0;  // the size class it occupies in a default kvhubd host tier of the given capacity
  double ratio() const { return static_cast<double>(raw_bytes) / static_cast<double>(encoded_bytes); }
};

// Sizes of one spec.block_tokens block of `spec` (bf16) under `codec`
// (raw | fp8 | int8 | kivi4 | kivi2; kivi: group 64, 1 sink token), and its
// chunk in a default kvhubd host tier of `store_capacity_bytes`.
absl::StatusOr<CodecBlockSize> BlockSizeFor(const ModelSpec& spec, const std::string& codec,
                                            uint64_t store_capacity_bytes);

// Tokens a budget of `budget_bytes` holds: floor(budget / encoded_bytes) blocks.
inline uint64_t TokensInBudget(uint64_t budget_bytes, const CodecBlockSize& s, uint32_t block_tokens) {
  return budget_bytes / s.encoded_bytes * block_tokens;
}

}  // namespace kvhub::replay
