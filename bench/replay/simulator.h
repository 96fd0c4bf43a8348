#pragma once
// Offline cache simulation over a Trace (docs/replay.md).
//
// Model (the same as the reference simulator the targets were measured with):
//  - every block occupies one slot of a cache holding `capacity_blocks` blocks;
//    a partial last block is charged a whole block (it is padded to a full block
//    in live replay, so live and sim agree);
//  - a request's hit is the tokens of its leading run of present blocks (the
//    partial last block counts its actual tokens);
//  - after the lookup, every block of the request is touched in order: a present
//    block is accessed (EvictionPolicy::OnAccess), a missing one is offered to
//    Admit and inserted (evicting PickVictim's choices while the cache is full);
//  - hit rate = hit tokens / requested input tokens (token-weighted).
// SimulatePolicy runs the storage library's EvictionPolicy objects, the very
// code kvhubd runs. Belady (MIN with bypass) and the infinite cache are references.
//
// Thread safety: functions are pure; a policy object must not be shared.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/replay/trace.h"
#include "storage/eviction_policy.h"

namespace kvhub::replay {

struct SimOptions {
  uint64_t capacity_blocks = 0;   // > 0
  uint32_t block_tokens = kTraceBlockTokens;
  // false: partial last blocks are never cached nor hit (kvhub caches full blocks
  // only); true (default): charged as a full block, as the reference simulator does.
  bool cache_partial_tail = true;
  // Store-style watermarks: when an insert finds the cache full, evict down to
  // low_watermark * capacity (1.0 = one victim per insert).
  double low_watermark = 1.0;
  // When > 0, overrides low_watermark: blocks left after an eviction round (the
  // insert then makes it evict_to_blocks + 1). Must be < capacity_blocks.
  uint64_t evict_to_blocks = 0;
  // How a request touches the cache (see AccessModel).
  enum class AccessModel : uint8_t {
    // Every block in order: present -> one OnAccess, missing -> insert.
    kReference = 0,
    // What live replay does through kvhub::Client (docs/replay.md, "live equals
    // sim"): LookupPrefix accesses every present block, Fetch (Acquire) the
    // leading run once more, Publish's Lookup every present block again, then
    // the missing blocks are inserted in order.
    kLiveClient = 1,
  };
  AccessModel access_model = AccessModel::kReference;
};

struct SimResult {
  std::string policy;
  uint64_t capacity_blocks = 0;
  uint64_t requested_tokens = 0;
  uint64_t hit_tokens = 0;
  uint64_t inserted_blocks = 0;
  uint64_t evicted_blocks = 0;
  uint64_t rejected_blocks = 0;  // refused by Admit or (Belady) bypassed
  double hit_rate() const {
    return requested_tokens ? static_cast<double>(hit_tokens) / static_cast<double>(requested_tokens)
                            : 0.0;
  }
};

// The 64-bit digest the simulator gives policies as ghost_hint for a dense block id.
uint64_t SimGhostHint(uint32_t block);

// INVALID_ARGUMENT for capacity 0 or more than 2^31 blocks.
absl::StatusOr<SimResult> SimulatePolicy(const Trace& trace, storage::EvictionPolicy& policy,
                                         const SimOptions& options);

// A cluster of shards, each its own cache of options.capacity_blocks blocks with
// its own policy (policies[s]); block b lives on shard shard_of[b] (placement as
// the client computes it). A parent slot is passed to OnInsert only when the
// parent is present on the same shard, as a kvhubd store sees it.
// INVALID_ARGUMENT for bad options, an empty policy list, or shard_of of the
// wrong size or naming a shard >= policies.size().
absl::StatusOr<SimResult> SimulateSharded(const Trace& trace,
                                          const std::vector<storage::EvictionPolicy*>& policies,
                                          const std::vector<uint32_t>& shard_of,
                                          const SimOptions& options);
absl::StatusOr<SimResult> SimulateBelady(const Trace& trace, const SimOptions& options);
SimResult SimulateInfinite(const Trace& trace, const SimOptions& options);

}  // namespace kvhub::replay
