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
  links_.Init(capacity_slots);
  small_.Clear();
  main_.Clear();
  where_.assign(capacity_slots, kNone);
  freq_.assign(capacity_slots, 0);
  bytes_.assign(capacity_slots, 0);
  hint_.assign(capacity_slots, 0);
  small_bytes_ = main_bytes_ = 0;
  small_share_ = config_.initial_small;
  admit_ghost_.Init(Scaled(config_.ghost_factor, capacity_slots));
  small_recent_.Init(Scaled(config_.window, capacity_slots));
  main_recent_.Init(Scaled(config_.window, capacity_slots));
  prefix_.Init(capacity_slots);
}

void AdaptiveS3FifoPolicy::TrimGhosts() {
  uint32_t resident = std::max<uint32_t>(size(), 1);
  admit_ghost_.TrimTo(Scaled(config_.ghost_factor, resident));
  small_recent_.TrimTo(Scaled(config_.window, resident));
  main_recent_.TrimTo(Scaled(config_.window, resident));
}

void AdaptiveS3FifoPolicy::OnInsert(uint32_t slot, uint32_t parent_slot, uint64_t ghost_hint,
                                    uint64_t bytes) {
  if (slot >= where_.size() || where_[slot] != kNone) return;  // misuse: ignore
  if (parent_slot != kNoSlot && (parent_slot >= where_.size() || where_[parent_slot] == kNone)) {
    parent_slot = kNoSlot;
  }
  prefix_.OnInsert(slot, parent_slot);
  freq_[slot] = 0;
  bytes_[slot] = bytes;
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
  if (proven) {
    main_.PushHead(slot);
    where_[slot] = kMain;
    main_bytes_ += bytes;
  } else {
    small_.PushHead(slot);
    where_[slot] = kSmall;
    small_bytes_ += bytes;
  }
}

void AdaptiveS3FifoPolicy::OnAccess(uint32_t slot) {
  if (slot >= where_.size() || where_[slot] == kNone) return;
  if (freq_[slot] < kMaxFreq) ++freq_[slot];
}

void AdaptiveS3FifoPolicy::OnRemove(uint32_t slot, bool evicted) {
  if (slot >= where_.size() || where_[slot] == kNone) return;
  if (where_[slot] == kSmall) {
    small_.Remove(slot);
    small_bytes_ -= bytes_[slot];
    if (evicted) {
      admit_ghost_.Insert(hint_[slot]);
      small_recent_.Insert(hint_[slot]);
    }
  } else {
    main_.Remove(slot);
    main_bytes_ -= bytes_[slot];
    if (evicted) main_recent_.Insert(hint_[slot]);
  }
  where_[slot] = kNone;
  prefix_.OnRemove(slot);
  TrimGhosts();
}

void AdaptiveS3FifoPolicy::MoveSmallToMain(uint32_t slot) {
  small_.Remove(slot);
  small_bytes_ -= bytes_[slot];
  main_.PushHead(slot);
  main_bytes_ += bytes_[slot];
  where_[slot] = kMain;
}

uint32_t AdaptiveS3FifoPolicy::Pick(absl::FunctionRef<bool(uint32_t)> can_evict, bool leaves_only) {
  // Bounded pass, as in S3FifoPolicy: each slot of S is looked at once, each slot
  // that is or may become part of M at most kMaxFreq + 1 times.
  uint64_t small_steps = small_.count();
  uint64_t main_steps = uint64_t{kMaxFreq + 1} * (small_.count() + main_.count());
  for (;;) {
    bool main_left = !main_.empty() && main_steps > 0;
    bool small_left = !small_.empty() && small_steps > 0;
    if (!main_left && !small_left) return kNoSlot;
    double total = static_cast<double>(small_bytes_ + main_bytes_);
    bool from_small =
        small_left && (!main_left || static_cast<double>(small_bytes_) >= small_share_ * total);
    if (from_small) {
      --small_steps;
      uint32_t t = small_.tail();
      if (!can_evict(t)) {
        small_.MoveToHead(t);
      } else if (freq_[t] >= 1) {
        freq_[t] = 0;
        MoveSmallToMain(t);  // hit while in S: promote
      } else if (leaves_only && !prefix_.is_leaf(t)) {
        small_.MoveToHead(t);
      } else {
        return t;
      }
    } else {
      --main_steps;
      uint32_t t = main_.tail();
      if (!can_evict(t)) {
        main_.MoveToHead(t);
      } else if (freq_[t] > 0) {
        --freq_[t];
        main_.MoveToHead(t);
      } else if (leaves_only && !prefix_.is_leaf(t)) {
        main_.MoveToHead(t);
      } else {
        return t;
      }
    }
  }
}

uint32_t AdaptiveS3FifoPolicy::PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict) {
  uint32_t s = Pick(can_evict, /*leaves_only=*/config_.prefix_aware);
  if (s == kNoSlot && config_.prefix_aware) s = Pick(can_evict, /*leaves_only=*/false);
  return s;
}

}  // namespace kvhub::storage
