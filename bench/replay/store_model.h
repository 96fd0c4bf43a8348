#pragma once
// What a kvhubd host tier holds, in blocks, for blocks of one size: the byte
// accounting of storage::HostBlockStore (docs/storage.md) turned into the
// simulator's block capacity (docs/replay.md, "Live equals sim").
//
// The store charges each block its size-class chunk (SizeClasses::ClassFor), and
// on an insert that would take the allocated bytes above high_watermark x capacity
// it evicts until the new chunk fits under low_watermark x capacity. With every
// block in one class of C bytes it therefore holds at most floor(H / C) blocks and
// an eviction round leaves floor(L / C) - 1 (H, L the watermark byte counts as the
// store truncates them). This is exact while the slabs hold at least floor(H / C)
// chunks (no allocation-driven eviction); `exact` says whether that holds.
// Thread safety: pure function.

#include <cstdint>

#include "absl/status/statusor.h"
#include "storage/block_store.h"

namespace kvhub::replay {

struct StoreModelInput {
  uint64_t capacity_bytes = 0;
  double high_watermark = storage::BlockStoreConfig{}.high_watermark;  // kvhubd's defaults
  double low_watermark = storage::BlockStoreConfig{}.low_watermark;
  uint64_t region_bytes = 1ull << 30;
  uint64_t max_block_bytes = 64ull << 20;
  // The allocator slab; 0 = the store's automatic choice (storage::AutoSlabBytes). Give it
  // explicitly to kvhubd (--slab_bytes) and here, and the model does not depend on
  // how the store's default is computed.
  uint64_t slab_bytes = 0;
  uint64_t min_block_bytes = 4096;
  uint32_t size_class_steps = 8;
  uint64_t block_bytes = 0;        // payload size of a block
  uint64_t first_block_bytes = 0;  // of a chain's first block (0: same as block_bytes)
};

struct StoreModel {
  uint64_t chunk_bytes = 0;      // the size class a block occupies
  uint64_t capacity_blocks = 0;  // floor(H / C)
  uint64_t evict_to_blocks = 0;  // floor(L / C) - 1
  uint64_t slab_chunks = 0;      // chunks the regions can hold in that class
  bool exact = false;            // one class for all blocks and slab_chunks >= capacity_blocks
};

// INVALID_ARGUMENT when the inputs are inconsistent or hold fewer than 2 blocks.
absl::StatusOr<StoreModel> ModelStore(const StoreModelInput& in);

}  // namespace kvhub::replay
