#include "storage/block_index.h"

#include <bit>

namespace kvhub::storage {

void BlockIndex::Init(uint32_t max_slots) {
  uint64_t n = std::bit_ceil(uint64_t{max_slots} * 2);
  if (n < 16) n = 16;
  table_.assign(n, kEmpty);
  mask_ = n - 1;
  keys_.assign(max_slots, BlockKey{});
  ns_tags_.assign(max_slots, 0);
  size_ = 0;
}

uint32_t BlockIndex::Find(const BlockKey& key, uint64_t ns_tag) const {
  uint32_t h = Hash32(key, ns_tag);
  for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
    uint64_t e = table_[i];
    if (e == kEmpty) return kNoSlot;
    if (static_cast<uint32_t>(e >> 32) == h) {
      uint32_t slot = static_cast<uint32_t>(e);
      if (keys_[slot] == key && ns_tags_[slot] == ns_tag) return slot;
    }
  }
}

void BlockIndex::Insert(const BlockKey& key, uint64_t ns_tag, uint32_t slot) {
  uint32_t h = Hash32(key, ns_tag);
  uint64_t i = h & mask_;
  while (table_[i] != kEmpty) i = (i + 1) & mask_;
  table_[i] = Entry(h, slot);
  keys_[slot] = key;
  ns_tags_[slot] = ns_tag;
  ++size_;
}

bool BlockIndex::Erase(const BlockKey& key, uint64_t ns_tag) {
  uint32_t h = Hash32(key, ns_tag);
  uint64_t i = h & mask_;
  for (;; i = (i + 1) & mask_) {
    uint64_t e = table_[i];
    if (e == kEmpty) return false;
    uint32_t slot = static_cast<uint32_t>(e);
    if (static_cast<uint32_t>(e >> 32) == h && keys_[slot] == key && ns_tags_[slot] == ns_tag) {
      break;
    }
  }
  // Backward-shift: pull later entries of the probe run into the hole.
  uint64_t j = i;
  for (;;) {
    j = (j + 1) & mask_;
    uint64_t e = table_[j];
    if (e == kEmpty) break;
    uint64_t home = (e >> 32) & mask_;
    bool in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!in_range) {
      table_[i] = e;
      i = j;
    }
  }
  table_[i] = kEmpty;
  --size_;
  return true;
}

}  // namespace kvhub::storage
