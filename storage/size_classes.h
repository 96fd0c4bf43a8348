#pragma once
// The size classes of the host-tier allocator (docs/storage.md).
//
// Classes grow geometrically from min_block_bytes with `steps_per_doubling`
// classes per power of two (8: neighbours differ by <= 9%, so a block wastes at
// most ~8% of its chunk to rounding), each rounded up to kAlign bytes, while a
// slab holds at least kFineChunks (64) chunks; above that every slab_bytes / k
// (k = 63 .. 1, aligned down) is a class, so a slab holds whole chunks with no
// tail waste and big blocks round by 1/k. The last class is >= max_block_bytes.
//
// Thread safety: immutable after Build; safe to share.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace kvhub::storage {

class SizeClasses {
 public:
  static constexpr uint64_t kAlign = 64;  // every chunk starts 64-byte aligned
  static constexpr uint64_t kFineChunks = 64;  // below this many chunks per slab: slab / k classes

  // INVALID_ARGUMENT when the bounds are inconsistent (min > max, max > slab, ...).
  static absl::StatusOr<SizeClasses> Build(uint64_t min_block_bytes, uint64_t max_block_bytes,
                                           uint64_t slab_bytes, uint32_t steps_per_doubling);

  uint32_t count() const { return static_cast<uint32_t>(sizes_.size()); }
  uint64_t size(uint32_t cls) const { return sizes_[cls]; }
  uint64_t slab_bytes() const { return slab_bytes_; }
  uint32_t chunks_per_slab(uint32_t cls) const {
    return static_cast<uint32_t>(slab_bytes_ / sizes_[cls]);
  }
  // Smallest class holding `bytes`; count() if bytes exceeds the largest class.
  uint32_t ClassFor(uint64_t bytes) const;

 private:
  std::vector<uint64_t> sizes_;
  uint64_t slab_bytes_ = 0;
};

// The store's automatic slab size (BlockStoreConfig::slab_bytes = 0): start at
// bit_ceil(max_block_bytes) and double while the slab still divides
// region_bytes and the capacity still holds at least 64 slabs. Small stores keep
// many slabs (more size classes live at once, less collateral eviction when a
// slab changes class); large stores get large slabs, so the few chunks of a big
// block class (k < 16 per slab, snapped to slab / k) waste little: a 19 MB block
// takes a 22.4 MB chunk of a 64 MiB slab but a 19.2 MB chunk of a 1 GiB one.
// Returns region_bytes when bit_ceil(max_block_bytes) does not divide it.
// Pure function.
uint64_t AutoSlabBytes(uint64_t capacity_bytes, uint64_t region_bytes, uint64_t max_block_bytes);

}  // namespace kvhub::storage
