#include "storage/s3fifo_policy.h"

#include <algorithm>

namespace kvhub::storage {

void S3FifoPolicy::Init(uint32_t capacity_slots) {
  queues_.Init(capacity_slots);
  hint_.assign(capacity_slots, 0);
  ghost_.Init(std::max<uint32_t>(capacity_slots, 1), initial_ghost_room_);
}

void S3FifoPolicy::OnInsert(uint32_t slot, uint32_t parent_slot, uint64_t ghost_hint,
                            uint64_t bytes) {
  if (slot >= hint_.size() || queues_.resident(slot)) return;  // misuse: ignore
  hint_[slot] = ghost_hint;
  S3FifoQueues::Queue queue = S3FifoQueues::kSmall;
  if (ghost_.Contains(ghost_hint)) {
    ghost_.Erase(ghost_hint);
    queue = S3FifoQueues::kMain;
  }
  queues_.Insert(slot, parent_slot, bytes, queue);
}

void S3FifoPolicy::OnAccess(uint32_t slot) { queues_.Access(slot); }

void S3FifoPolicy::OnRemove(uint32_t slot, bool evicted) {
  const S3FifoQueues::Queue was = queues_.Remove(slot);
  if (was == S3FifoQueues::kNone) return;
  if (was == S3FifoQueues::kSmall && evicted) ghost_.Insert(hint_[slot]);
  ghost_.TrimTo(std::max<uint32_t>(queues_.size(), 1));
}

uint32_t S3FifoPolicy::PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict,
                                  absl::FunctionRef<bool(uint32_t)> wanted) {
  constexpr auto kKeep = S3FifoQueues::OnPromote::kKeepFrequency;
  uint32_t s = queues_.Pick(can_evict, wanted, /*leaves_only=*/prefix_aware_, small_ratio_, kKeep);
  if (s == kNoSlot && prefix_aware_) s = queues_.Pick(can_evict, wanted, /*leaves_only=*/false, small_ratio_, kKeep);
  return s;
}

}  // namespace kvhub::storage
