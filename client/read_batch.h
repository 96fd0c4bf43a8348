#pragma once
// What every data plane does with a batch of BlockReads (client/data_plane.h)
// around its own transfer: the packed key bytes of a Get request, the per-block
// errors a shard or a caller buffer causes, and failing what did not complete.
// Pure functions; thread-compatible.

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "client/data_plane.h"
#include "common/keys.h"

namespace kvhub {

// The reads' keys, 16 canonical bytes each, in order (GetRequest.keys).
std::string PackedKeys(std::span<const BlockRead> reads);

// The status of one block a shard answered with `code` (an absl::StatusCode)
// and `message`: NOT_FOUND is a plain miss; anything else names the block.
absl::Status ShardItemError(int32_t code, absl::string_view message, const BlockKey& key);

// RESOURCE_EXHAUSTED: the block is `size` bytes, the caller's buffer `capacity`.
absl::Status BufferTooSmall(const BlockKey& key, uint64_t size, size_t capacity);

// Every read not yet OK and not a miss gets `why` and size 0.
void FailUnfinished(std::span<BlockRead> reads, const absl::Status& why);

}  // namespace kvhub
