#include "bench/replay/byte_budget.h"

#include <algorithm>

#include "bench/replay/store_model.h"
#include "codec/codec.h"
#include "codec/segment_layout.h"
#include "storage/size_classes.h"

namespace kvhub::replay {

absl::StatusOr<CodecBlockSize> BlockSizeFor(const ModelSpec& spec, const std::string& codec,
                                            uint64_t store_capacity_bytes) {
  if (absl::Status s = spec.Validate(); !s.ok()) return s;
  absl::StatusOr<codec::CodecId> id = codec::ParseCodecName(codec);
  if (!id.ok()) return id.status();
  codec::KvShape shape;
  shape.layers = spec.layers;
  shape.kv_heads = spec.kv_heads;
  shape.head_dim = spec.head_dim;
  shape.tokens = spec.block_tokens;
  shape.dtype = spec.dtype;
  codec::CodecParams params;
  params.codec = *id;
  absl::StatusOr<uint64_t> later = codec::EncodedSize(shape, params, 0);
  if (!later.ok()) return later.status();
  // A chain's first block keeps its attention-sink tokens in bf16 (lossy codecs).
  absl::StatusOr<uint64_t> first = codec::EncodedSize(
      shape, params, codec::SinksInBlock(*id, params.sink_tokens, 0, shape.tokens));
  if (!first.ok()) return first.status();
  CodecBlockSize s;
  s.codec = codec;
  s.raw_bytes = shape.RawBytes();
  s.encoded_bytes = *later;
  s.first_bytes = *first;
  // The default kvhubd host tier of that capacity: 4 KiB .. 64 MiB classes, 8
  // per doubling, 1 GiB regions (at most the capacity) and the store's
  // automatic slab size.
  const uint64_t region = std::min<uint64_t>(1ull << 30, std::max<uint64_t>(
                                                             (store_capacity_bytes + 4095) / 4096 * 4096, 64ull << 20));
  absl::StatusOr<storage::SizeClasses> classes = storage::SizeClasses::Build(
      4096, 64ull << 20, storage::AutoSlabBytes(store_capacity_bytes, region, 64ull << 20), 8);
  if (classes.ok() && classes->ClassFor(*later) < classes->count()) {
    s.store_chunk_bytes = classes->size(classes->ClassFor(*later));
  }
  return s;
}

}  // namespace kvhub::replay
