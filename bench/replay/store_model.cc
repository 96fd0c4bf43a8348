#include "bench/replay/store_model.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "storage/size_classes.h"

namespace kvhub::replay {

absl::StatusOr<StoreModel> ModelStore(const StoreModelInput& in) {
  if (in.capacity_bytes == 0 || in.block_bytes == 0 || in.region_bytes == 0) {
    return absl::InvalidArgumentError("store model needs capacity, region and block bytes > 0");
  }
  if (!(in.low_watermark > 0 && in.low_watermark <= in.high_watermark && in.high_watermark <= 1)) {
    return absl::InvalidArgumentError("store model needs 0 < low <= high <= 1 watermarks");
  }
  const uint64_t slab =
      in.slab_bytes ? in.slab_bytes
                    : storage::AutoSlabBytes(in.capacity_bytes, in.region_bytes, in.max_block_bytes);
  if (in.region_bytes % slab != 0) {
    return absl::InvalidArgumentError("store model: slab_bytes must divide region_bytes");
  }
  absl::StatusOr<storage::SizeClasses> classes = storage::SizeClasses::Build(
      in.min_block_bytes, in.max_block_bytes, slab, in.size_class_steps);
  if (!classes.ok()) return classes.status();
  const uint64_t first = in.first_block_bytes ? in.first_block_bytes : in.block_bytes;
  const uint32_t cls = classes->ClassFor(in.block_bytes);
  const uint32_t first_cls = classes->ClassFor(first);
  if (cls >= classes->count() || first_cls >= classes->count()) {
    return absl::InvalidArgumentError(absl::StrCat("block of ", std::max(first, in.block_bytes),
                                                   " bytes exceeds max_block_bytes"));
  }
  StoreModel m;
  m.chunk_bytes = std::max(classes->size(cls), classes->size(first_cls));
  const uint64_t high = static_cast<uint64_t>(in.high_watermark * static_cast<double>(in.capacity_bytes));
  const uint64_t low = static_cast<uint64_t>(in.low_watermark * static_cast<double>(in.capacity_bytes));
  m.capacity_blocks = high / m.chunk_bytes;
  m.evict_to_blocks = low / m.chunk_bytes;
  if (m.evict_to_blocks > 0) --m.evict_to_blocks;
  if (m.capacity_blocks < 2 || m.evict_to_blocks == 0 || m.evict_to_blocks >= m.capacity_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("capacity ", in.capacity_bytes, " holds only ",
                                                   m.capacity_blocks, " blocks of ", m.chunk_bytes,
                                                   " bytes; too few to model"));
  }
  const uint64_t total = (in.capacity_bytes + slab - 1) / slab * slab;
  m.slab_chunks = total / slab * (slab / m.chunk_bytes);
  m.exact = cls == first_cls && m.slab_chunks >= m.capacity_blocks;
  return m;
}

}  // namespace kvhub::replay
