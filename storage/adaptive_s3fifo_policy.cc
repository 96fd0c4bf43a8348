#include "storage/adaptive_s3fifo_policy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace kvhub::storage {

absl::Status AdaptiveS3FifoConfig::Validate() const {
  if (!(min_small > 0.0 && min_small <= max_small && max_small < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "as3fifo needs 0 < min_small <= max_small < 1, got ", min_small, ", ", max_small));
  }
  if (!(initial_small >= min_small && initial_small <= max_small)) {
    return absl::InvalidArgumentError(
        absl::StrCat("as3fifo initial_small must lie in [min_small, max_small], got ", initial_small));
  }
  if (!(ghost_factor >= 0.0 && ghost_factor <= 64.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("as3fifo ghost_factor must be in [0, 64], got ", ghost_factor));
  }
  if (!(window > 0.0 && window <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("as3fifo window must be in (0, 1], got ", window));
  }
  if (!(gain > 0.0 && gain <= 1024.0)) {
    return absl::InvalidArgumentError(absl::StrCat("as3fifo gain must be in (0, 1024], got ", gain));
  }
  return absl::OkStatus();
}

namespace {
uint32_t Scaled(double factor, uint32_t n) {
  double v = std::ceil(factor * static_cast<double>(n));
  return static_cast<uint32_t>(std::clamp(v, 1.0, 4294967295.0));
}
}  // namespace

void AdaptiveS3FifoPolicy::Init(uint32_t capacity_slots) {
  queues_.Init(capacity_slots);
  hint_.assign(capacity_slots, 0);
  small_share_ = config_.initial_small;
  // The ghosts are trimmed to multiples of the *resident* blocks, which are
  // usually far fewer than the slots: they start small and grow as they fill.
  admit_ghost_.Init(Scaled(config_.ghost_factor, capacity_slots), kInitialGhostRoom);
  small_recent_.Init(Scaled(config_.window, capacity_slots), kInitialGhostRoom);
  main_recent_.Init(Scaled(config_.window, capacity_slots), kInitialGhostRoom);
}

void AdaptiveS3FifoPolicy::TrimGhosts() {
  uint32_t resident = std::max<uint32_t>(size(), 1);
  admit_ghost_.TrimTo(Scaled(config_.ghost_factor, resident));
  small_recent_.TrimTo(Scaled(config_.window, resident));
  main_recent_.TrimTo(Scaled(config_.window, resident));
}

void AdaptiveS3FifoPolicy::OnInsert(uint32_t slot, uint32_t parent_slot, uint64_t ghost_hint,
                                    uint64_t bytes) {
  if (slot >= hint_.size() || queues_.resident(slot)) return;  // misuse: ignore
  hint_[slot] = ghost_hint;

  // Marginal hits: which queue, had it been `window` larger, would have kept it.
  double step = config_.gain / static_cast<double>(std::max<uint32_t>(size() + 1, 1));
  bool proven = false;
  if (small_recent_.Contains(ghost_hint)) {
    small_recent_.Erase(ghost_hint);
    small_share_ = std::min(config_.max_small, small_share_ + step);
  } else if (main_recent_.Contains(ghost_hint)) {
    main_recent_.Erase(ghost_hint);
    small_share_ = std::max(config_.min_small, small_share_ - step);
    proven = true;
  }
  if (admit_ghost_.Contains(ghost_hint)) {
    admit_ghost_.Erase(ghost_hint);
    proven = true;
  }
  queues_.Insert(slot, parent_slot, bytes, proven ? S3FifoQueues::kMain : S3FifoQueues::kSmall);
}

void AdaptiveS3FifoPolicy::OnAccess(uint32_t slot) { queues_.Access(slot); }

void AdaptiveS3FifoPolicy::OnRemove(uint32_t slot, bool evicted) {
  const S3FifoQueues::Queue was = queues_.Remove(slot);
  if (was == S3FifoQueues::kNone) return;
  if (evicted) {
    if (was == S3FifoQueues::kSmall) {
      admit_ghost_.Insert(hint_[slot]);
      small_recent_.Insert(hint_[slot]);
    } else {
      main_recent_.Insert(hint_[slot]);
    }
  }
  TrimGhosts();
}

uint32_t AdaptiveS3FifoPolicy::PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict,
                                          absl::FunctionRef<bool(uint32_t)> wanted) {
  // A block promoted from S starts over in M with frequency 0.
  constexpr auto kReset = S3FifoQueues::OnPromote::kResetFrequency;
  uint32_t s = queues_.Pick(can_evict, wanted, /*leaves_only=*/config_.prefix_aware, small_share_, kReset);
  if (s == kNoSlot && config_.prefix_aware) {
    s = queues_.Pick(can_evict, wanted, /*leaves_only=*/false, small_share_, kReset);
  }
  return s;
}

}  // namespace kvhub::storage
