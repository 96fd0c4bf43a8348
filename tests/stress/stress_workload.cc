#include "tests/stress/stress_workload.h"

#include <algorithm>
#include <cstring>

#include "common/splitmix.h"

namespace kvhub::stress {
namespace {

uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t s = a * 0x2545f4914f6cdd1dull ^ b;
  return SplitMix64(&s);
}

// The generator state a key's payload starts from.
uint64_t PayloadSeed(const BlockKey& key) { return Mix(key.lo, key.hi ^ 0x6b7668756273ull); }

}  // namespace

absl::Status WorkloadOptions::Validate() const {
  if (prompts < 1 || prompts > (1u << 20)) return absl::InvalidArgumentError("prompts must be 1..1048576");
  if (groups < 1 || groups > prompts) return absl::InvalidArgumentError("groups must be 1..prompts");
  if (max_blocks < 1 || max_blocks > 1024) return absl::InvalidArgumentError("max_blocks must be 1..1024");
  if (block_tokens < 1 || block_tokens > 65536) {
    return absl::InvalidArgumentError("block_tokens must be 1..65536");
  }
  if (max_block_bytes < 1 || max_block_bytes > (64ull << 20)) {
    return absl::InvalidArgumentError("max_block_bytes must be 1 B..64 MiB");
  }
  if (min_block_bytes < 1 || min_block_bytes > max_block_bytes) {
    return absl::InvalidArgumentError("min_block_bytes must be 1..max_block_bytes");
  }
  return absl::OkStatus();
}

absl::StatusOr<Workload> Workload::Create(const WorkloadOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  ModelSpec spec;
  spec.model = "kvhub-stress";
  spec.layers = 1;
  spec.kv_heads = 1;
  spec.head_dim = 8;
  spec.block_tokens = options.block_tokens;
  if (absl::Status s = spec.Validate(); !s.ok()) return s;
  return Workload(options, std::move(spec));
}

uint32_t Workload::SharedBlocks(uint32_t p) const {
  return std::min<uint32_t>(options_.max_blocks, 1 + (p / options_.groups) % 3);
}

uint32_t Workload::Blocks(uint32_t p) const {
  const uint32_t shared = SharedBlocks(p);
  const uint32_t extra = options_.max_blocks - shared;
  return shared + static_cast<uint32_t>(extra == 0 ? 0 : Mix(p, 0x626c6f636b73ull) % (extra + 1));
}

std::vector<int32_t> Workload::Tokens(uint32_t p) const {
  const uint32_t bt = options_.block_tokens, n = Blocks(p), shared = SharedBlocks(p);
  std::vector<int32_t> tokens(static_cast<size_t>(n) * bt);
  for (uint32_t b = 0; b < n; ++b) {
    // Shared blocks draw from the group's stream, the others from the prompt's.
    uint64_t state = b < shared ? Mix(0x67726f7570ull + p % options_.groups, b)
                                : Mix(0x70726f6d7074ull + p, b);
    for (uint32_t t = 0; t < bt; ++t) {
      tokens[static_cast<size_t>(b) * bt + t] = static_cast<int32_t>(SplitMix64(&state) % 150000);
    }
  }
  return tokens;
}

uint64_t Workload::PayloadSize(const BlockKey& key) const {
  const uint64_t span = options_.max_block_bytes - options_.min_block_bytes + 1;
  return options_.min_block_bytes + Mix(key.hi, key.lo) % span;
}

void Workload::FillPayload(const BlockKey& key, std::span<uint8_t> out) {
  uint64_t state = PayloadSeed(key);
  size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    const uint64_t w = SplitMix64(&state);
    std::memcpy(out.data() + i, &w, 8);
  }
  if (i < out.size()) {
    const uint64_t w = SplitMix64(&state);
    std::memcpy(out.data() + i, &w, out.size() - i);
  }
}

std::vector<uint8_t> Workload::ExpectedPayload(const BlockKey& key) const {
  std::vector<uint8_t> out(PayloadSize(key));
  FillPayload(key, out);
  return out;
}

bool Workload::Matches(const BlockKey& key, std::span<const uint8_t> got) const {
  if (got.size() != PayloadSize(key)) return false;
  uint64_t state = PayloadSeed(key);
  size_t i = 0;
  for (; i + 8 <= got.size(); i += 8) {
    const uint64_t w = SplitMix64(&state);
    if (std::memcmp(got.data() + i, &w, 8) != 0) return false;
  }
  if (i < got.size()) {
    const uint64_t w = SplitMix64(&state);
    if (std::memcmp(got.data() + i, &w, got.size() - i) != 0) return false;
  }
  return true;
}

}  // namespace kvhub::stress
