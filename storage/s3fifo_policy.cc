#include "storage/s3fifo_policy.h"

#include <algorithm>

namespace kvhub::storage {

void S3FifoPolicy::Init(uint32_t capacity_slots) {
  links_.Init(capacity_slots);
  small_.Clear();
  main_.Clear();
  where_.assign(capacity_slots, kNone);
  freq_.assign(capacity_slots, 0);
  bytes_.assign(capacity_slots, 0);
  hint_.assign(capacity_slots, 0);
  small_bytes_ = main_bytes_ = 0;
  ghost_.Init(std::max<uint32_t>(capacity_slots, 1));
  prefix_.Init(capacity_slots);
}

void S3FifoPolicy::OnInsert(uint32_t slot, uint32_t parent_slot, uint64_t ghost_hint,
                            uint64_t bytes) {
  if (slot >= where_.size() || where_[slot] != kNone) return;  // misuse: ignore
  if (parent_slot != kNoSlot && (parent_slot >= where_.size() || where_[parent_slot] == kNone)) {
    parent_slot = kNoSlot;
  }
  prefix_.OnInsert(slot, parent_slot);
  freq_[slot] = 0;
  bytes_[slot] = bytes;
  hint_[slot] = ghost_hint;
  if (ghost_.Contains(ghost_hint)) {
    ghost_.Erase(ghost_hint);
    main_.PushHead(slot);
    where_[slot] = kMain;
    main_bytes_ += bytes;
  } else {
    small_.PushHead(slot);
    where_[slot] = kSmall;
    small_bytes_ += bytes;
  }
}

void S3FifoPolicy::OnAccess(uint32_t slot) {
  if (slot >= where_.size() || where_[slot] == kNone) return;
  if (freq_[slot] < kMaxFreq) ++freq_[slot];
}

void S3FifoPolicy::OnRemove(uint32_t slot, bool evicted) {
  if (slot >= where_.size() || where_[slot] == kNone) return;
  if (where_[slot] == kSmall) {
    small_.Remove(slot);
    small_bytes_ -= bytes_[slot];
    if (evicted) ghost_.Insert(hint_[slot]);
  } else {
    main_.Remove(slot);
    main_bytes_ -= bytes_[slot];
  }
  where_[slot] = kNone;
  prefix_.OnRemove(slot);
  ghost_.TrimTo(std::max<uint32_t>(small_.count() + main_.count(), 1));
}

void S3FifoPolicy::MoveSmallToMain(uint32_t slot) {
  small_.Remove(slot);
  small_bytes_ -= bytes_[slot];
  main_.PushHead(slot);
  main_bytes_ += bytes_[slot];
  where_[slot] = kMain;
}

uint32_t S3FifoPolicy::Pick(absl::FunctionRef<bool(uint32_t)> can_evict, bool leaves_only) {
  // Step budgets bound one pass: every slot of S is looked at once; every slot
  // that is or may become part of M at most kMaxFreq + 1 times.
  uint64_t small_steps = small_.count();
  uint64_t main_steps = uint64_t{kMaxFreq + 1} * (small_.count() + main_.count());
  for (;;) {
    bool main_left = !main_.empty() && main_steps > 0;
    bool small_left = !small_.empty() && small_steps > 0;
    if (!main_left && !small_left) return kNoSlot;
    double total = static_cast<double>(small_bytes_ + main_bytes_);
    bool from_small =
        small_left && (!main_left || static_cast<double>(small_bytes_) >= small_ratio_ * total);
    if (from_small) {
      --small_steps;
      uint32_t t = small_.tail();
      if (!can_evict(t)) {
        small_.MoveToHead(t);
      } else if (freq_[t] >= 1) {
        MoveSmallToMain(t);  // hit while in S: promote (keeps its frequency)
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

uint32_t S3FifoPolicy::PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict) {
  uint32_t s = Pick(can_evict, /*leaves_only=*/prefix_aware_);
  if (s == kNoSlot && prefix_aware_) s = Pick(can_evict, /*leaves_only=*/false);
  return s;
}

}  // namespace kvhub::storage
