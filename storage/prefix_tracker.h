#pragma once
// Per-slot chain bookkeeping for prefix-aware eviction (DESIGN §5: a child block
// is worthless without its parent, so leaves go first). Tracks, for every live
// slot, its parent slot and how many live children it has in the tier.
//
// A parent may leave the tier before its children (when no leaf was evictable,
// or with prefix awareness off). Its slot may then be reused; each slot carries
// a generation, bumped on every insert, so a child never decrements the child
// count of a stranger that reuses its old parent's slot.
//
// Thread safety: none. No allocation after Init.

#include <cstdint>
#include <vector>

#include "storage/eviction_policy.h"

namespace kvhub::storage {

class PrefixTracker {
 public:
  void Init(uint32_t n) {
    parent_.assign(n, kNoSlot);
    parent_gen_.assign(n, 0);
    gen_.assign(n, 0);
    children_.assign(n, 0);
  }

  // `slot` became live with chain parent `parent` (kNoSlot if none). Returns true
  // when `parent` just went from leaf to interior (0 -> 1 children).
  bool OnInsert(uint32_t slot, uint32_t parent) {
    ++gen_[slot];
    children_[slot] = 0;
    parent_[slot] = parent;
    if (parent == kNoSlot || parent == slot || parent >= parent_.size()) {
      parent_[slot] = kNoSlot;
      return false;
    }
    parent_gen_[slot] = gen_[parent];
    return ++children_[parent] == 1;
  }

  // `slot` left. Returns the parent slot that just became a leaf (1 -> 0
  // children), or kNoSlot.
  uint32_t OnRemove(uint32_t slot) {
    uint32_t p = parent_[slot];
    parent_[slot] = kNoSlot;
    ++gen_[slot];  // children of this slot now hold a stale generation
    children_[slot] = 0;
    if (p == kNoSlot || gen_[p] != parent_gen_[slot] || children_[p] == 0) return kNoSlot;
    return --children_[p] == 0 ? p : kNoSlot;
  }

  uint32_t children(uint32_t slot) const { return children_[slot]; }
  bool is_leaf(uint32_t slot) const { return children_[slot] == 0; }

 private:
  std::vector<uint32_t> parent_;
  std::vector<uint32_t> parent_gen_;
  std::vector<uint32_t> gen_;
  std::vector<uint32_t> children_;
};

}  // namespace kvhub::storage
