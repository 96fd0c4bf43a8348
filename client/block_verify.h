#pragma once
// Client-side check of a received block (DESIGN §3, §4): a block whose size or
// XXH3-64 checksum does not match what the shard declared is a miss, never data.

#include <cstdint>
#include <span>

#include "absl/status/status.h"

namespace kvhub {

// OK when bytes.size() == declared_size and XXH3-64(bytes) == declared_checksum;
// DATA_LOSS naming the mismatch otherwise.
absl::Status VerifyBlock(std::span<const uint8_t> bytes, uint64_t declared_size,
                         uint64_t declared_checksum);

// VerifyBlock for bytes hashed while they were copied: `received` bytes whose
// XXH3-64 is `xxh3_64`.
absl::Status VerifyHashedBlock(uint64_t received, uint64_t xxh3_64, uint64_t declared_size,
                               uint64_t declared_checksum);

// The checksum half of VerifyBlock, for bytes whose XXH3-64 is already known
// (computed while they were copied) and whose size was already checked.
absl::Status VerifyBlockChecksum(uint64_t xxh3_64, uint64_t declared_checksum);

}  // namespace kvhub
