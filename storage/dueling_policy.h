#pragma once
// Dueling eviction ("duel"): the tier follows whichever of its candidate
// policies, LRU, adaptive S3-FIFO (as3fifo) and S3-FIFO, would be hitting most
// on the recent traffic (docs/replay.md, "Policy research").
//
//  - One shadow cache per candidate, metadata only (a 64-bit key digest per
//    entry), replays every reference the tier sees (OnInsert = a miss,
//    OnAccess = a hit) under that policy, holding as many blocks as the tier
//    does now. Shadows count prefix hits: a reference scores only if its block
//    is in the shadow and its chain parent (the OnInsert parent_slot's key,
//    when the parent is in this tier) scored at its own last reference. That
//    assumes a request references its chain in order, parents first, as the
//    client and the replay simulator do; out of order it only misjudges which
//    policy leads. Hits decay exponentially (half-life `half_life` x resident
//    blocks of references, at least `min_half_life_refs`).
//  - Every candidate also orders the tier's real blocks (every event goes to
//    all); PickVictim asks the leader. Another candidate takes over only when
//    its shadow leads the leader's by its margin (as3fifo 2%, S3-FIFO 40%, LRU
//    0.5%: biased to LRU, the safe default), and not before one half-life of
//    references has been scored (warm-up), so it does not flap.
// Because each shadow is an unbiased sample of what its policy would do at the
// current size, the tier tracks the best candidate on the current workload:
// as3fifo where one-hit blocks dominate (small caches), LRU where the cache
// covers most reuse distances (large caches), S3-FIFO where a cyclic working
// set is larger than the tier (it keeps part of it; the others lose it whole).
// Memory: every candidate's per-slot state plus its shadow: ~330 B per slot of
// Init(capacity_slots), plus the S3-FIFO and as3fifo ghosts (real and shadow),
// which grow with the blocks really resident; size the store's slot table
// (max_blocks) to the blocks it can really hold.
// Thread safety: none (see EvictionPolicy). Allocation after Init: only when a
// ghost grows (O(log(capacity_slots)) times in all, on eviction).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "storage/adaptive_s3fifo_policy.h"
#include "storage/eviction_policy.h"

namespace kvhub::storage {

struct DuelingConfig {
  AdaptiveS3FifoConfig as3fifo;  // the adaptive candidate (its prefix_aware applies to all)
  double half_life = 1.0;        // hit-counter half-life, x resident blocks of references
  // ...but at least this many references: a small tier's window would otherwise
  // be a few dozen references, too few to tell a 2% lead from noise. It is also
  // the warm-up: the starting policy picks victims until this many references
  // (or half_life x resident, if more) have been scored.
  double min_half_life_refs = 4000;
  // Hysteresis, biased to LRU (the safe default): as3fifo must lead the leader
  // by `margin` (relative) to take over, LRU by `lru_margin`.
  double margin = 0.02;
  double lru_margin = 0.005;
  bool start_with_lru = true;    // which policy picks victims until the shadows disagree
  // A third candidate, S3-FIFO with this small-queue share (0: none): it keeps a
  // fixed part of a cyclic working set larger than the tier, which LRU and
  // as3fifo lose whole.
  double s3fifo_small_ratio = 0.1;
  double s3fifo_margin = 0.4;  // the lead S3-FIFO needs to take over
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
  using EvictionPolicy::PickVictim;
  uint32_t PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict,
                      absl::FunctionRef<bool(uint32_t)> wanted) override;
  std::string Name() const override { return config_.as3fifo.prefix_aware ? "duel+prefix" : "duel"; }
  // The candidate choosing victims: "lru", "as3fifo" or "s3fifo".
  std::string ActiveName() const override { return candidates_[leader_].name; }
  uint64_t Switches() const override { return switches_; }

  // Introspection: true while LRU chooses victims.
  bool following_lru() const { return leader_ == 0; }

  // A metadata-only cache of key digests driven by a policy (exposed for tests).
  class Shadow;

 private:
  struct Candidate {
    const char* name;                      // ActiveName() while it leads
    std::unique_ptr<EvictionPolicy> real;  // orders the tier's blocks
    std::unique_ptr<Shadow> shadow;        // what it would hit at the tier's size
    double hits;                           // decayed prefix hits of the shadow
    double margin;                         // lead it needs to take over
  };
  void Reference(uint64_t hint, uint64_t parent);

  const DuelingConfig config_;
  std::vector<Candidate> candidates_;  // [0] LRU, [1] as3fifo, [2] S3-FIFO if configured
  std::vector<uint64_t> hint_;         // per real slot
  std::vector<uint64_t> parent_hint_;  // per real slot: its chain parent's hint (0: none known)
  std::vector<uint8_t> live_;
  uint32_t resident_ = 0;
  uint64_t references_ = 0;  // counted up to the first half-life (warm-up), then frozen
  size_t leader_ = 0;
  uint64_t switches_ = 0;
};

}  // namespace kvhub::storage
