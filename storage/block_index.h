#pragma once
// The host tier's index: (namespace tag, block key) -> slot id. An
// open-addressing table (linear probing, backward-shift deletion: no
// tombstones, no rehash) sized at Init for `max_slots` entries at load <= 1/2,
// so Insert/Erase never allocate. Each 8-byte table entry holds the slot id and
// 32 bits of the hash, so most probes that do not match never touch the slot's
// key. The namespace is stored as its 64-bit XXH3 tag: a key under another
// namespace does not match. The hash is keyed by a per-process random seed
// (keyed_hash.h), so clients cannot choose keys that share a probe cluster.
//
// Thread safety: none; the owner serializes calls.

#include <cstdint>
#include <vector>

#include "common/keys.h"
#include "storage/eviction_policy.h"
#include "storage/keyed_hash.h"

namespace kvhub::storage {

class BlockIndex {
 public:
  void Init(uint32_t max_slots);

  // Slot of (key, ns_tag), or kNoSlot.
  uint32_t Find(const BlockKey& key, uint64_t ns_tag) const;
  // Maps (key, ns_tag) -> slot. The caller guarantees the pair is absent and
  // that `slot` < max_slots is not mapped.
  void Insert(const BlockKey& key, uint64_t ns_tag, uint32_t slot);
  // Unmaps the pair; returns false if it was absent.
  bool Erase(const BlockKey& key, uint64_t ns_tag);
  // Prefetches the table line that Find(key, ns_tag) starts at.
  void Prefetch(const BlockKey& key, uint64_t ns_tag) const {
    __builtin_prefetch(&table_[Hash32(key, ns_tag) & mask_]);
  }

  const BlockKey& key(uint32_t slot) const { return keys_[slot]; }
  uint64_t ns_tag(uint32_t slot) const { return ns_tags_[slot]; }
  uint32_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  // Keyed per process (keyed_hash.h): clients choose keys, and must not be able to
  // aim them at one probe cluster.
  uint32_t Hash32(const BlockKey& key, uint64_t ns_tag) const {
    return static_cast<uint32_t>(KeyedHash64(key, ns_tag, seed_) >> 32);
  }
  static uint64_t Entry(uint32_t hash, uint32_t slot) { return (uint64_t{hash} << 32) | slot; }

  std::vector<uint64_t> table_;  // kEmpty or Entry(hash32, slot)
  uint64_t mask_ = 0;
  std::vector<BlockKey> keys_;   // per slot
  std::vector<uint64_t> ns_tags_;
  uint32_t size_ = 0;
  HashSeed seed_ = ProcessHashSeed();
};

}  // namespace kvhub::storage
