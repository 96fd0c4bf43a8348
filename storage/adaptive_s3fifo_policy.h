#pragma once
// Adaptive S3-FIFO ("as3fifo"): S3-FIFO tuned for KV-cache traces, where most
// blocks are used once and the reuse gap of the rest is longer than a small
// queue can cover (docs/replay.md, "Policy research").
//
//  - Admission by a long ghost: a new block enters the small FIFO S; a block
//    whose key digest is in the admission ghost G (the last `ghost_factor` x
//    resident blocks evicted from S) goes straight to main M. G is several times
//    the cache, so a block proven by a second use is kept even when that use came
//    long after its first.
//  - M is a CLOCK FIFO with a 2-bit frequency (as in S3-FIFO).
//  - The share of S adapts by marginal hits (as ARC does, but with symmetric
//    windows): two short ghosts remember the last `window` x resident victims of
//    S and of M. A miss found in S's short ghost would have been a hit had S been
//    `window` larger, so S grows by one block; one found in M's short ghost makes
//    S shrink by one block. S stays within [min_small, max_small] of the resident
//    bytes. At small capacities S shrinks to a thin probation queue; at large ones
//    it grows so that first reuses are kept, as LRU keeps them.
//  - Optional prefix awareness: leaves are evicted before blocks with live
//    children (as in S3FifoPolicy).
//
// Memory: per slot ~40 B (queues and the key digest), allocated at Init. The
// ghosts hold at most (ghost_factor + 2 x window) x resident blocks of key
// digests, ~48 B each; they start with room for kInitialGhostRoom each and
// double it as they fill (GhostFifo), so their memory follows the blocks the
// tier really holds, not its slot table (docs/replay.md, "Policy memory").
// Thread safety: none (see EvictionPolicy). Allocation after Init: only when a
// ghost grows, O(log(capacity_slots)) times in all, on the eviction path.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "storage/eviction_policy.h"
#include "storage/ghost_fifo.h"
#include "storage/s3fifo_queues.h"

namespace kvhub::storage {

struct AdaptiveS3FifoConfig {
  double initial_small = 0.05;  // starting share of S in resident bytes
  double min_small = 0.01;      // S never adapts below this share ...
  double max_small = 0.9;       // ... nor above this one
  double ghost_factor = 5.0;    // admission ghost holds this many x resident blocks
  double window = 0.2;          // marginal-hit window, x resident blocks
  double gain = 1.0;            // blocks S grows/shrinks per marginal hit
  bool prefix_aware = false;    // evict chain leaves before their parents
  absl::Status Validate() const;
};

class AdaptiveS3FifoPolicy final : public EvictionPolicy {
 public:
  // Room each ghost starts with (digests).
  static constexpr uint32_t kInitialGhostRoom = 1024;

  explicit AdaptiveS3FifoPolicy(const AdaptiveS3FifoConfig& config) : config_(config) {}

  void Init(uint32_t capacity_slots) override;
  void OnInsert(uint32_t slot, uint32_t parent_slot, uint64_t ghost_hint, uint64_t bytes) override;
  void OnAccess(uint32_t slot) override;
  void OnRemove(uint32_t slot, bool evicted) override;
  using EvictionPolicy::PickVictim;
  uint32_t PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict,
                      absl::FunctionRef<bool(uint32_t)> wanted) override;
  std::string Name() const override { return config_.prefix_aware ? "as3fifo+prefix" : "as3fifo"; }

  // Introspection for tests and the trace simulator.
  bool in_small(uint32_t slot) const { return queues_.in_small(slot); }
  bool in_main(uint32_t slot) const { return queues_.in_main(slot); }
  double small_share() const { return small_share_; }
  uint32_t size() const { return queues_.size(); }

 private:
  void TrimGhosts();

  const AdaptiveS3FifoConfig config_;
  S3FifoQueues queues_;
  std::vector<uint64_t> hint_;
  double small_share_ = 0.05;
  GhostFifo admit_ghost_;   // long: admission
  GhostFifo small_recent_;  // short: last victims of S
  GhostFifo main_recent_;   // short: last victims of M
};

}  // namespace kvhub::storage
