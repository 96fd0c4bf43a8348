#pragma once
// The deterministic workload of kvhub-stress: prompts that share prefixes, and a
// payload that is a pure function of its block key.
//
// Because a key's payload never changes (the same tokens under the same spec are the
// same KV), any block a cluster serves can be checked against ExpectedPayload(key)
// without knowing what the cluster holds: a block served with other bytes than these
// is wrong, whatever evictions, deletions, kills or retries happened before.
//
// Prompt p (0 <= p < prompts) belongs to group p % groups. Its first SharedBlocks(p)
// blocks (1..3) carry the group's tokens (a system prompt every prompt of the group
// shares); the rest carry tokens of p alone. Prompt lengths are 1..max_blocks full
// blocks. Everything is a function of (options, p): two processes with the same
// options see the same prompts and keys.
//
// Thread safety: immutable after construction; all methods may be called concurrently.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/keys.h"
#include "common/model_spec.h"

namespace kvhub::stress {

struct WorkloadOptions {
  uint32_t prompts = 512;        // distinct prompts, 1..1M
  uint32_t groups = 16;          // prompt groups sharing leading blocks, 1..prompts
  uint32_t max_blocks = 12;      // full blocks per prompt at most, 1..1024
  uint32_t block_tokens = 16;    // tokens per block, 1..65536
  uint64_t min_block_bytes = 1024;        // payload size range, 1 .. max_block_bytes
  uint64_t max_block_bytes = 128 << 10;   // .. 64 MiB

  // INVALID_ARGUMENT naming the first bad field.
  absl::Status Validate() const;
};

class Workload {
 public:
  static absl::StatusOr<Workload> Create(const WorkloadOptions& options);

  const ModelSpec& spec() const { return spec_; }
  const WorkloadOptions& options() const { return options_; }

  // Full blocks of prompt p (1..max_blocks) and how many lead blocks its group shares.
  uint32_t Blocks(uint32_t p) const;
  uint32_t SharedBlocks(uint32_t p) const;
  // The tokens of prompt p: Blocks(p) * block_tokens ids.
  std::vector<int32_t> Tokens(uint32_t p) const;

  // The payload size of `key`, in [min_block_bytes, max_block_bytes].
  uint64_t PayloadSize(const BlockKey& key) const;
  // Writes the payload of `key` into out (out.size() must be PayloadSize(key)).
  static void FillPayload(const BlockKey& key, std::span<uint8_t> out);
  // The payload of `key`.
  std::vector<uint8_t> ExpectedPayload(const BlockKey& key) const;
  // True when `got` is exactly the payload of `key` (size and bytes).
  bool Matches(const BlockKey& key, std::span<const uint8_t> got) const;

 private:
  Workload(const WorkloadOptions& options, ModelSpec spec) : options_(options), spec_(std::move(spec)) {}

  WorkloadOptions options_;
  ModelSpec spec_;
};

}  // namespace kvhub::stress
