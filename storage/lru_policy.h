#pragma once
// Least-recently-used eviction over slot ids.
//
// Plain: one list; a hit moves the slot to the head; the victim is the evictable
// slot nearest the tail.
// Prefix-aware: two lists, leaves and interior blocks (blocks with live children
// in the tier). Victims come from the leaves list first; the interior list is
// used only when no leaf is evictable. A block whose last child leaves moves to
// the cold end of the leaves list: its last access is no later than its child's
// (a prefix lookup touches the parent before the child), and the child was just
// the coldest evictable leaf.
//
// Slots that can_evict rejects (pinned, leased) are rotated to the head of their
// list, so a long-pinned block is not rescanned on every pick; slots the caller
// does not want keep their place. Each PickVictim looks at every slot at most
// once, so it is O(1) amortized unless most of the tier is unevictable or unwanted.
//
// Thread safety: none (see EvictionPolicy). No allocation after Init.

#include <cstdint>
#include <string>
#include <vector>

#include "storage/eviction_policy.h"
#include "storage/prefix_tracker.h"
#include "storage/slot_list.h"

namespace kvhub::storage {

class LruPolicy final : public EvictionPolicy {
 public:
  explicit LruPolicy(bool prefix_aware) : prefix_aware_(prefix_aware) {}

  void Init(uint32_t capacity_slots) override;
  void OnInsert(uint32_t slot, uint32_t parent_slot, uint64_t ghost_hint, uint64_t bytes) override;
  void OnAccess(uint32_t slot) override;
  void OnRemove(uint32_t slot, bool evicted) override;
  using EvictionPolicy::PickVictim;
  uint32_t PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict,
                      absl::FunctionRef<bool(uint32_t)> wanted) override;
  std::string Name() const override { return prefix_aware_ ? "lru+prefix" : "lru"; }

  // Introspection for tests and the trace simulator.
  uint32_t size() const { return leaves_.count() + interior_.count(); }
  bool contains(uint32_t slot) const { return slot < where_.size() && where_[slot] != kNone; }

 private:
  enum : uint8_t { kNone = 0, kLeaves = 1, kInterior = 2 };
  SlotList& ListOf(uint32_t slot) { return where_[slot] == kInterior ? interior_ : leaves_; }
  uint32_t Scan(SlotList& list, absl::FunctionRef<bool(uint32_t)> can_evict,
               absl::FunctionRef<bool(uint32_t)> wanted);

  const bool prefix_aware_;
  SlotLinks links_;
  SlotList leaves_{&links_};    // every slot when !prefix_aware_
  SlotList interior_{&links_};  // slots with live children (prefix_aware_ only)
  std::vector<uint8_t> where_;
  PrefixTracker prefix_;
};

}  // namespace kvhub::storage
