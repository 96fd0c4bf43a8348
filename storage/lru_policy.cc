#include "storage/lru_policy.h"

namespace kvhub::storage {

void LruPolicy::Init(uint32_t capacity_slots) {
  links_.Init(capacity_slots);
  leaves_.Clear();
  interior_.Clear();
  where_.assign(capacity_slots, kNone);
  prefix_.Init(capacity_slots);
}

void LruPolicy::OnInsert(uint32_t slot, uint32_t parent_slot, uint64_t, uint64_t) {
  if (slot >= where_.size() || where_[slot] != kNone) return;  // misuse: ignore
  if (parent_slot != kNoSlot && (parent_slot >= where_.size() || where_[parent_slot] == kNone)) {
    parent_slot = kNoSlot;  // parent not in this tier
  }
  bool parent_became_interior = prefix_.OnInsert(slot, parent_slot);
  if (prefix_aware_ && parent_became_interior && where_[parent_slot] == kLeaves) {
    leaves_.Remove(parent_slot);
    interior_.PushHead(parent_slot);
    where_[parent_slot] = kInterior;
  }
  leaves_.PushHead(slot);
  where_[slot] = kLeaves;
}

void LruPolicy::OnAccess(uint32_t slot) {
  if (slot >= where_.size() || where_[slot] == kNone) return;
  ListOf(slot).MoveToHead(slot);
}

void LruPolicy::OnRemove(uint32_t slot, bool evicted) {
  if (slot >= where_.size() || where_[slot] == kNone) return;
  ListOf(slot).Remove(slot);
  where_[slot] = kNone;
  uint32_t now_leaf = prefix_.OnRemove(slot);
  if (prefix_aware_ && now_leaf != kNoSlot && where_[now_leaf] == kInterior) {
    interior_.Remove(now_leaf);
    // Its child evicted: the cold end (see header). Its child deleted (or removed with
    // its slab): the parent's own use says nothing about that, so not the cold end
    // (a recently used parent was the next victim).
    if (evicted) {
      leaves_.PushTail(now_leaf);
    } else {
      leaves_.PushHead(now_leaf);
    }
    where_[now_leaf] = kLeaves;
  }
}

uint32_t LruPolicy::Scan(SlotList& list, absl::FunctionRef<bool(uint32_t)> can_evict,
                         absl::FunctionRef<bool(uint32_t)> wanted) {
  uint32_t s = list.tail();
  for (uint32_t n = list.count(); n > 0 && s != kNoSlot; --n) {
    const uint32_t younger = links_.prev(s);  // the next slot toward the head
    if (!can_evict(s)) {
      list.MoveToHead(s);  // unevictable now: do not rescan it next time
    } else if (wanted(s)) {
      return s;
    }  // else: passed over in place
    s = younger;
  }
  return kNoSlot;
}

uint32_t LruPolicy::PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict,
                               absl::FunctionRef<bool(uint32_t)> wanted) {
  uint32_t s = Scan(leaves_, can_evict, wanted);
  if (s == kNoSlot) s = Scan(interior_, can_evict, wanted);
  return s;
}

}  // namespace kvhub::storage
