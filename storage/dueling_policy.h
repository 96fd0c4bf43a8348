#pragma once
// Dueling eviction ("duel"): the tier follows whichever of two policies, LRU or
// adaptive S3-FIFO (as3fifo), would be hitting more on the recent traffic
// (docs/replay.md, "Policy research").
//
//  - Two shadow caches, metadata only (a 64-bit key digest per entry), replay
//    every reference the tier sees (OnInsert = a miss, OnAccess = a hit) under
//    LRU and under as3fifo, each holding as many blocks as the tier does now.
//    They count prefix hits: a reference scores only if its block is in the
//    shadow and its chain parent (the OnInsert parent_slot's key, when the
//    parent is in this tier) scored at its own last reference. That assumes a
//    request references its chain in order, parents first, as the client and
//    the replay simulator do; out of order it only misjudges which policy leads.
//    Hits decay exponentially (half-life `half_life` x resident blocks of
//    references, at least `min_half_life_refs`).
//  - Both policies also order the tier's real blocks (every event goes to both);
//    PickVictim asks the one whose shadow leads, switching only when the other
//    leads by more than a margin (2% for as3fifo to take over, 0.5% for LRU to
//    take back), so it does not flap and ties go to LRU.
// Because each shadow is an unbiased sample of what its policy would do at the
// current size, the tier tracks the better of the two on the current workload:
// as3fifo where one-hit blocks dominate (small caches), LRU where the cache
// covers most reuse distances (large caches).
// Memory: both policies' per-slot state plus two shadow caches: ~240 B per slot
// of Init(capacity_slots), plus the as3fifo ghosts (real and shadow), which grow
// with the blocks really resident (AdaptiveS3FifoPolicy); size the store's slot
// table (max_blocks) to the blocks it can really hold.
// Thread safety: none (see EvictionPolicy). Allocation after Init: only when an
// as3fifo ghost grows (O(log(capacity_slots)) times in all, on eviction).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "storage/adaptive_s3fifo_policy.h"
#include "storage/eviction_policy.h"
#include "storage/lru_policy.h"

namespace kvhub::storage {

struct DuelingConfig {
  AdaptiveS3FifoConfig as3fifo;  // the adaptive contender (prefix_aware applies to both)
  double half_life = 1.0;        // hit-counter half-life, x resident blocks of references
  // ...but at least this many references: a small tier's window would otherwise
  // be a few dozen references, too few to tell a 2% lead from noise. It is also
  // the warm-up: the starting policy picks victims until this many references
  // (or half_life x resident, if more) have been scored.
  double min_half_life_refs = 4000;
  // Hysteresis, biased to LRU (the safe default): as3fifo must lead by `margin`
  // (relative) to take over from LRU, LRU by `lru_margin` to take it back.
  double margin = 0.02;
  double lru_margin = 0.005;
  bool start_with_lru = true;    // which policy picks victims until the shadows disagree
  absl::Status Validate() const;
};

class DuelingPolicy final : public EvictionPolicy {
 public:
  explicit DuelingPolicy(const DuelingConfig& config);
  ~DuelingPolicy() override;

  void Init(uint32_t capacity_slots) override;
  void OnInsert(uint32_t slot, uint32_t parent_slot, uint64_t ghost_hint, uint64_t bytes) override;
  void OnAccess(uint32_t slot) override;
  void OnRemove(uint32_t slot, bool evicted) override;
  uint32_t PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict) override;
  std::string Name() const override { return config_.as3fifo.prefix_aware ? "duel+prefix" : "duel"; }

  // Introspection: true while LRU chooses victims.
  bool following_lru() const { return follow_lru_; }
  uint64_t switches() const { return switches_; }

  // A metadata-only cache of key digests driven by a policy (exposed for tests).
  class Shadow;

 private:
  void Reference(uint64_t hint, uint64_t parent);

  const DuelingConfig config_;
  LruPolicy lru_;
  AdaptiveS3FifoPolicy as3_;
  std::unique_ptr<Shadow> shadow_lru_, shadow_as3_;
  std::vector<uint64_t> hint_;         // per real slot
  std::vector<uint64_t> parent_hint_;  // per real slot: its chain parent's hint (0: none known)
  std::vector<uint8_t> live_;
  uint32_t resident_ = 0;
  double hits_lru_ = 0, hits_as3_ = 0;
  uint64_t references_ = 0;  // counted up to the first half-life (warm-up), then frozen
  bool follow_lru_ = false;
  uint64_t switches_ = 0;
};

}  // namespace kvhub::storage
