#pragma once
// Helpers shared by the storage tests: small store configs and deterministic
// block bytes.

#include <cstdint>
#include <vector>

#include "common/hash.h"
#include "common/keys.h"
#include "storage/block_store.h"

namespace kvhub::storage::testing {

// A 4 MiB store: 64 KiB slabs, blocks 256 B .. 16 KiB, no hugepages.
inline BlockStoreConfig SmallConfig() {
  BlockStoreConfig c;
  c.capacity_bytes = 4ull << 20;
  c.region_bytes = 1ull << 20;
  c.slab_bytes = 64ull << 10;
  c.min_block_bytes = 256;
  c.max_block_bytes = 16ull << 10;
  c.try_hugepages = false;
  c.max_leases = 4096;
  return c;
}

inline BlockKey Key(uint64_t i) { return BlockKey{i * 0x9e3779b97f4a7c15ull + 1, i}; }

// Bytes of block `i`, `size` long; differ per block and per position.
inline std::vector<uint8_t> Bytes(uint64_t i, size_t size) {
  std::vector<uint8_t> b(size);
  uint64_t x = i * 0x2545f4914f6cdd1dull + 7;
  for (size_t j = 0; j < size; ++j) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b[j] = static_cast<uint8_t>(x);
  }
  return b;
}

inline uint64_t Sum(const std::vector<uint8_t>& b) { return Xxh3_64(b.data(), b.size()); }

}  // namespace kvhub::storage::testing
