#pragma once
// The size classes of the host-tier allocator (docs/storage.md).
//
// Classes grow geometrically from min_block_bytes to max_block_bytes with
// `steps_per_doubling` classes per power of two (8: neighbours differ by <= 9%,
// so a block wastes at most ~8% of its chunk to rounding). Each size is rounded
// up to `align` bytes. Large classes are snapped to slab_bytes / k (k < 16) so a
// slab holds whole chunks with no tail waste. The last class is >= max_block_bytes.
//
// Thread safety: immutable after Build; safe to share.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace kvhub::storage {

class SizeClasses {
 public:
  static constexpr uint64_t kAlign = 64;  // every chunk starts 64-byte aligned

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

}  // namespace kvhub::storage
