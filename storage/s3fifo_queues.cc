#include "storage/s3fifo_queues.h"

namespace kvhub::storage {

void S3FifoQueues::Init(uint32_t capacity_slots) {
  links_.Init(capacity_slots);
  small_.Clear();
  main_.Clear();
  where_.assign(capacity_slots, kNone);
  freq_.assign(capacity_slots, 0);
  bytes_.assign(capacity_slots, 0);
  stuck_.assign(capacity_slots, 0);
  small_bytes_ = main_bytes_ = small_stuck_bytes_ = 0;
  prefix_.Init(capacity_slots);
}

void S3FifoQueues::Insert(uint32_t slot, uint32_t parent_slot, uint64_t bytes, Queue queue) {
  if (slot >= where_.size() || where_[slot] != kNone || queue == kNone) return;
  if (!resident(parent_slot)) parent_slot = kNoSlot;
  prefix_.OnInsert(slot, parent_slot);
  freq_[slot] = 0;
  bytes_[slot] = bytes;
  where_[slot] = queue;
  if (queue == kMain) {
    main_.PushHead(slot);
    main_bytes_ += bytes;
  } else {
    small_.PushHead(slot);
    small_bytes_ += bytes;
  }
}

void S3FifoQueues::Access(uint32_t slot) {
  if (!resident(slot)) return;
  if (freq_[slot] < kMaxFreq) ++freq_[slot];
}

S3FifoQueues::Queue S3FifoQueues::Remove(uint32_t slot) {
  if (!resident(slot)) return kNone;
  const Queue was = static_cast<Queue>(where_[slot]);
  if (was == kSmall) {
    SetStuck(slot, false);
    small_.Remove(slot);
    small_bytes_ -= bytes_[slot];
  } else {
    main_.Remove(slot);
    main_bytes_ -= bytes_[slot];
  }
  where_[slot] = kNone;
  prefix_.OnRemove(slot);
  return was;
}

void S3FifoQueues::SetStuck(uint32_t slot, bool stuck) {
  if (stuck_[slot] == static_cast<uint8_t>(stuck)) return;
  stuck_[slot] = stuck;
  if (stuck) {
    small_stuck_bytes_ += bytes_[slot];
  } else {
    small_stuck_bytes_ -= bytes_[slot];
  }
}

void S3FifoQueues::MoveSmallToMain(uint32_t slot) {
  SetStuck(slot, false);
  small_.Remove(slot);
  small_bytes_ -= bytes_[slot];
  main_.PushHead(slot);
  main_bytes_ += bytes_[slot];
  where_[slot] = kMain;
}

uint32_t S3FifoQueues::Pick(absl::FunctionRef<bool(uint32_t)> can_evict,
                            absl::FunctionRef<bool(uint32_t)> wanted, bool leaves_only,
                            double small_share, OnPromote on_promote) {
  // Step budgets bound one pass: every slot of S is looked at once; every slot
  // that is or may become part of M at most kMaxFreq + 1 times (unwanted slots
  // are passed without a change, and cost a step each time).
  uint64_t small_steps = small_.count();
  uint64_t main_steps = uint64_t{kMaxFreq + 1} * (small_.count() + main_.count());
  // Where each queue's scan is: its tail, unless the scan passed over unwanted
  // slots, which stay put; past the head it starts again at the tail.
  uint32_t small_at = small_.tail(), main_at = main_.tail();
  bool main_topped_up = false;
  for (;;) {
    if (small_at == kNoSlot) small_at = small_.tail();
    if (main_at == kNoSlot) main_at = main_.tail();
    const bool main_left = main_at != kNoSlot && main_steps > 0;
    const bool small_left = small_at != kNoSlot && small_steps > 0;
    if (!main_left && !small_left) return kNoSlot;
    const uint64_t small_live = small_bytes_ - small_stuck_bytes_;
    const double total = static_cast<double>(small_live + main_bytes_);
    const bool from_small =
        small_left && (!main_left || static_cast<double>(small_live) >= small_share * total);
    if (from_small) {
      --small_steps;
      const uint32_t t = small_at;
      small_at = links_.prev(t);
      SetStuck(t, !can_evict(t));
      if (stuck_[t]) {
        small_.MoveToHead(t);
      } else if (!wanted(t)) {
        // Passed over untouched: neither moved nor aged (a slab search that finds
        // nothing must not cost the tier its frequencies).
      } else if (freq_[t] >= 1) {
        if (on_promote == OnPromote::kResetFrequency) freq_[t] = 0;
        MoveSmallToMain(t);  // hit while in S: promote
        // M's budget may be spent (on unevictable blocks, when S under its share made
        // the pass start there): one more pass over M, so a promoted block can still
        // be the victim (no victim was returned while one was evictable, and the
        // store refused the put). Once per pick: the work stays bounded.
        if (main_steps == 0 && !main_topped_up) {
          main_topped_up = true;
          main_steps = uint64_t{kMaxFreq + 1} * main_.count();
          main_at = main_.tail();
        }
      } else if (leaves_only && !prefix_.is_leaf(t)) {
        small_.MoveToHead(t);
      } else {
        return t;
      }
    } else {
      --main_steps;
      const uint32_t t = main_at;
      main_at = links_.prev(t);
      if (!can_evict(t)) {
        main_.MoveToHead(t);
      } else if (!wanted(t)) {
        // Passed over untouched, as in S.
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

}  // namespace kvhub::storage
