#pragma once
// Eviction policy interface (DESIGN §5). A policy orders the blocks of one tier
// by "evict me first"; the store decides what may be evicted (pinned, leased,
// half-written blocks never are) and enforces watermarks.
//
// Blocks are named by slot ids, dense integers in [0, capacity_slots) that the
// store assigns; a policy preallocates per-slot state in Init() so that
// OnInsert/OnAccess/OnRemove/PickVictim never allocate (zero heap allocations
// per block on the data path).
//
// Thread safety: none. The owner serializes every call (the store calls it under
// its lock; the trace simulator is single-threaded).

#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvhub::storage {

inline constexpr uint32_t kNoSlot = 0xffffffffu;

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;

  // Sizes per-slot state for slots [0, capacity_slots). Called once before use.
  virtual void Init(uint32_t capacity_slots) = 0;

  // Admission: may a new block of `bytes` enter? `ghost_hint` is an opaque
  // 64-bit digest of the key for ghost/frequency-based admission. A policy that
  // always admits returns true.
  virtual bool Admit(uint64_t ghost_hint, uint64_t bytes) { return true; }

  // A block became visible in `slot`. `parent_slot` is the slot of its chain
  // parent when present in this tier, else kNoSlot.
  virtual void OnInsert(uint32_t slot, uint32_t parent_slot, uint64_t ghost_hint,
                        uint64_t bytes) = 0;
  // The block in `slot` was read (a hit).
  virtual void OnAccess(uint32_t slot) = 0;
  // The block in `slot` left the tier; `evicted`: it was PickVictim's choice. False:
  // deleted, or removed for another reason than its age (its slab emptied for
  // another size class), which says nothing of how hot it or its parent is.
  virtual void OnRemove(uint32_t slot, bool evicted) = 0;

  // The next victim among slots for which can_evict(slot) and wanted(slot) are
  // true, or kNoSlot when none is. Does not remove it: the store calls OnRemove
  // after evicting.
  //  - can_evict false: the slot cannot leave now (pinned, leased, half-written);
  //    the policy may move it out of the way of later picks.
  //  - wanted false (asked only of slots that can leave): the slot could leave
  //    but would not help this caller (a block of another size class). The pick
  //    passes over it and its place in the policy's order stays as it was, so
  //    it is not made younger than it is.
  virtual uint32_t PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict,
                              absl::FunctionRef<bool(uint32_t)> wanted) = 0;
  // Every slot that can leave is wanted.
  uint32_t PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict) {
    return PickVictim(can_evict, [](uint32_t) { return true; });
  }

  virtual std::string Name() const = 0;
  // The policy choosing victims now: Name() for a single policy; for one that
  // delegates (duel), the candidate it follows ("lru", "as3fifo", "s3fifo").
  virtual std::string ActiveName() const { return Name(); }
  // How many times ActiveName() changed since Init (0 for a single policy).
  virtual uint64_t Switches() const { return 0; }
};

// Policy names accepted by MakeEvictionPolicy and the `eviction_policy` configs:
//   "lru", "s3fifo", "as3fifo" (adaptive S3-FIFO, adaptive_s3fifo_policy.h),
//   "duel" (follows LRU, as3fifo or S3-FIFO, whichever its shadow caches show
//   hitting most, dueling_policy.h; as3fifo ignores s3fifo_small_ratio, duel's
//   S3-FIFO candidate uses it); with prefix_aware, a block with live children
//   in the tier is passed over while any leaf is evictable (a child is worthless
//   without its parent).
struct EvictionPolicyConfig {
  std::string name = "s3fifo";  // lru | s3fifo | as3fifo | duel
  // Evict chain leaves before their parents. Off by default: on the Mooncake
  // conversation trace it lowers every policy's hit rate (s3fifo 15.6% -> 14.2%
  // at 3M tokens; docs/results-replay.md), because the newest leaves are what the
  // next turn of a conversation reuses.
  bool prefix_aware = false;
  double s3fifo_small_ratio = 0.1;  // S3-FIFO small-queue share of capacity
  absl::Status Validate() const;
};

absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(const EvictionPolicyConfig& config);

}  // namespace kvhub::storage
