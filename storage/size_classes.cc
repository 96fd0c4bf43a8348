#include "storage/size_classes.h"

#include <bit>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace kvhub::storage {
namespace {
uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
uint64_t AlignDown(uint64_t v, uint64_t a) { return v / a * a; }
}  // namespace

absl::StatusOr<SizeClasses> SizeClasses::Build(uint64_t min_block_bytes, uint64_t max_block_bytes,
                                               uint64_t slab_bytes, uint32_t steps_per_doubling) {
  if (min_block_bytes == 0 || max_block_bytes < min_block_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("size classes need 0 < min_block_bytes (",
                                                   min_block_bytes, ") <= max_block_bytes (",
                                                   max_block_bytes, ")"));
  }
  if (steps_per_doubling == 0 || steps_per_doubling > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("size_class_steps must be in [1, 64], got ", steps_per_doubling));
  }
  if (slab_bytes % kAlign != 0 || AlignUp(max_block_bytes, kAlign) > slab_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("slab_bytes (", slab_bytes, ") must be a multiple of ", kAlign,
                     " and hold one max_block_bytes (", max_block_bytes, ") block"));
  }
  // Chunk counts are 32-bit (chunks_per_slab, the allocator's tables).
  if (slab_bytes / AlignUp(min_block_bytes, kAlign) > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("a ", slab_bytes, "-byte slab would hold more than 2^32-1 chunks of ",
                                                   min_block_bytes, " bytes: raise min_block_bytes or lower slab_bytes"));
  }
  SizeClasses sc;
  sc.slab_bytes_ = slab_bytes;
  // Geometric classes while a slab holds many chunks of them ...
  const double ratio = std::exp2(1.0 / steps_per_doubling);
  double ideal = static_cast<double>(min_block_bytes);
  uint64_t prev = 0;
  for (;;) {
    const uint64_t s = AlignUp(static_cast<uint64_t>(std::ceil(ideal)), kAlign);
    if (slab_bytes / s < kFineChunks) break;
    if (s >= max_block_bytes) {  // the last class (max_block_bytes is small for this slab)
      const uint64_t last = AlignUp(max_block_bytes, kAlign);
      if (last > prev) sc.sizes_.push_back(last);
      return sc;
    }
    if (s > prev) {
      sc.sizes_.push_back(s);
      prev = s;
    }
    ideal *= ratio;
  }
  // ... then every slab / k (k < kFineChunks chunks per slab, no tail waste but
  // alignment): neighbours differ by 1/k, finer than the geometric step for
  // k > 1 / (ratio - 1), and a slab is filled whole.
  for (uint64_t k = std::min<uint64_t>(kFineChunks - 1, slab_bytes / std::max<uint64_t>(prev, 1)); k >= 1; --k) {
    const uint64_t c = AlignDown(slab_bytes / k, kAlign);
    if (c <= prev || c < min_block_bytes) continue;
    sc.sizes_.push_back(c);
    prev = c;
    if (c >= max_block_bytes) break;
  }
  return sc;
}

uint32_t SizeClasses::ClassFor(uint64_t bytes) const {
  auto it = std::lower_bound(sizes_.begin(), sizes_.end(), bytes);
  return static_cast<uint32_t>(it - sizes_.begin());
}

uint64_t AutoSlabBytes(uint64_t capacity_bytes, uint64_t region_bytes, uint64_t max_block_bytes) {
  constexpr uint64_t kMinSlabs = 64;
  uint64_t slab = std::min<uint64_t>(region_bytes, std::bit_ceil(std::max<uint64_t>(max_block_bytes, 1)));
  if (slab == 0 || region_bytes % slab != 0) return region_bytes;
  while (slab * 2 <= region_bytes && region_bytes % (slab * 2) == 0 &&
         capacity_bytes / (slab * 2) >= kMinSlabs) {
    slab *= 2;
  }
  return slab;
}

}  // namespace kvhub::storage
