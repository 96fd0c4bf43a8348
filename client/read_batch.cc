#include "client/read_batch.h"

#include "absl/strings/str_cat.h"

namespace kvhub {

std::string PackedKeys(std::span<const BlockRead> reads) {
  std::string keys(reads.size() * 16, '\0');
  for (size_t i = 0; i < reads.size(); ++i) {
    reads[i].key.ToBytes(reinterpret_cast<uint8_t*>(keys.data()) + 16 * i);
  }
  return keys;
}

absl::Status ShardItemError(int32_t code, absl::string_view message, const BlockKey& key) {
  if (code == static_cast<int32_t>(absl::StatusCode::kNotFound)) {
    return absl::NotFoundError(absl::StrCat("block ", key.Hex(), " not found"));
  }
  return absl::Status(static_cast<absl::StatusCode>(code), absl::StrCat("block ", key.Hex(), ": ", message));
}

absl::Status BufferTooSmall(const BlockKey& key, uint64_t size, size_t capacity) {
  return absl::ResourceExhaustedError(
      absl::StrCat("block ", key.Hex(), " is ", size, " bytes; caller buffer holds ", capacity));
}

void FailUnfinished(std::span<BlockRead> reads, const absl::Status& why) {
  for (BlockRead& r : reads) {
    if (!r.status.ok() && r.status.code() != absl::StatusCode::kNotFound) {
      r.status = why;
      r.size = 0;
    }
  }
}

}  // namespace kvhub
