#pragma once
// S3-FIFO eviction (Yang et al., "FIFO queues are all you need for cache
// eviction", SOSP'23) over slot ids, byte-weighted.
//
//  - small FIFO S (about `small_ratio` of the resident bytes) receives new blocks;
//  - main FIFO M receives blocks promoted from S and blocks whose key digest is in
//    the ghost FIFO G;
//  - every block has a 2-bit frequency (0..3), bumped on each hit;
//  - eviction takes from S while S holds >= small_ratio of the resident bytes
//    (or M is empty): the tail of S moves to M if it was hit since insertion
//    (freq >= 1), else it is the victim and its digest enters G; otherwise from M:
//    the tail is reinserted at M's head with freq-1 while freq > 0, else it is the
//    victim. G holds at most as many digests as there are resident blocks.
//
// Prefix-aware: a block with live children in the tier is reinserted at the head
// of its queue instead of being evicted, while some leaf is evictable; chains are
// inserted parent first, so the parent lands behind its child and goes after it.
// Slots that can_evict rejects are likewise reinserted at the head. Each pass of
// PickVictim examines each slot a bounded number of times (freq <= 3), so picks
// are O(1) amortized unless most of the tier is unevictable.
//
// Thread safety: none (see EvictionPolicy). No allocation after Init unless
// constructed with a growing ghost (below).

#include <cstdint>
#include <string>
#include <vector>

#include "storage/eviction_policy.h"
#include "storage/ghost_fifo.h"
#include "storage/s3fifo_queues.h"

namespace kvhub::storage {

class S3FifoPolicy final : public EvictionPolicy {
 public:
  // `initial_ghost_room`: 0 allocates the ghost in full at Init (no allocation
  // after it); else the ghost starts with room for that many digests and grows
  // as it fills (GhostFifo::Init), so its memory follows the resident blocks.
  S3FifoPolicy(double small_ratio, bool prefix_aware, uint32_t initial_ghost_room = 0)
      : small_ratio_(small_ratio), prefix_aware_(prefix_aware), initial_ghost_room_(initial_ghost_room) {}

  void Init(uint32_t capacity_slots) override;
  void OnInsert(uint32_t slot, uint32_t parent_slot, uint64_t ghost_hint, uint64_t bytes) override;
  void OnAccess(uint32_t slot) override;
  void OnRemove(uint32_t slot, bool evicted) override;
  using EvictionPolicy::PickVictim;
  uint32_t PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict,
                      absl::FunctionRef<bool(uint32_t)> wanted) override;
  std::string Name() const override { return prefix_aware_ ? "s3fifo+prefix" : "s3fifo"; }

  // Introspection for tests and the trace simulator.
  bool in_small(uint32_t slot) const { return queues_.in_small(slot); }
  bool in_main(uint32_t slot) const { return queues_.in_main(slot); }
  bool in_ghost(uint64_t ghost_hint) const { return ghost_.Contains(ghost_hint); }
  uint32_t frequency(uint32_t slot) const { return queues_.frequency(slot); }
  uint32_t size() const { return queues_.size(); }
  uint64_t small_bytes() const { return queues_.small_bytes(); }
  uint64_t main_bytes() const { return queues_.main_bytes(); }

 private:
  const double small_ratio_;
  const bool prefix_aware_;
  const uint32_t initial_ghost_room_;
  S3FifoQueues queues_;
  std::vector<uint64_t> hint_;
  GhostFifo ghost_;
};

}  // namespace kvhub::storage
