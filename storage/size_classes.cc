#include "storage/size_classes.h"

#include <algorithm>
#include <cmath>

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
  SizeClasses sc;
  sc.slab_bytes_ = slab_bytes;
  const double ratio = std::exp2(1.0 / steps_per_doubling);
  double ideal = static_cast<double>(min_block_bytes);
  uint64_t prev = 0;
  for (;;) {
    uint64_t s = AlignUp(static_cast<uint64_t>(std::ceil(ideal)), kAlign);
    uint64_t k = slab_bytes / s;
    if (k < 16) {
      uint64_t snapped = AlignDown(slab_bytes / k, kAlign);
      if (snapped >= s) s = snapped;
    }
    if (s > prev) {
      if (s >= max_block_bytes) {
        // Last class: the smallest snapped size that holds max_block_bytes.
        uint64_t last = AlignUp(max_block_bytes, kAlign);
        uint64_t k2 = slab_bytes / last;
        if (k2 < 16) {
          uint64_t snapped = AlignDown(slab_bytes / k2, kAlign);
          if (snapped >= last) last = snapped;
        }
        if (last > prev) sc.sizes_.push_back(last);
        break;
      }
      sc.sizes_.push_back(s);
      prev = s;
    }
    ideal *= ratio;
  }
  return sc;
}

uint32_t SizeClasses::ClassFor(uint64_t bytes) const {
  auto it = std::lower_bound(sizes_.begin(), sizes_.end(), bytes);
  return static_cast<uint32_t>(it - sizes_.begin());
}

}  // namespace kvhub::storage
