#pragma once
// Destination buffers of one read must not share a byte.
//
// Client::Get and Client::Fetch fill their buffers from several shards at once;
// two buffers that overlap would be written concurrently, and a block reported
// loaded and verified could hold another block's bytes. CheckBuffersDisjoint
// refuses such a call before anything is read.
//
// Thread safety: a pure function of its argument.

#include <cstdint>
#include <span>

#include "absl/status/status.h"

namespace kvhub {

// OK when no two non-empty buffers share a byte (empty buffers never overlap);
// else INVALID_ARGUMENT naming the first overlapping pair by index. O(n log n).
absl::Status CheckBuffersDisjoint(std::span<const std::span<uint8_t>> buffers);

}  // namespace kvhub
