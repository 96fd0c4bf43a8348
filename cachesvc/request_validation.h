#pragma once
// Validation of kvhub.v1 requests against the limits in proto/kvhub/v1/kvhub.proto.
// A request that fails any check fails whole with INVALID_ARGUMENT and a message that
// names the field (e.g. "items[3].key: 15 bytes, want 16"); the caller must then
// touch nothing stored. Per-item outcomes (ALREADY_EXISTS, NOT_FOUND, ...) are not
// decided here: they come from the store and are reported in ItemStatus.
//
// Thread-safe, pure functions; no allocation on success.

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/keys.h"
#include "google/protobuf/repeated_field.h"
#include "kvhub/v1/kvhub.pb.h"

namespace kvhub::cachesvc {

inline constexpr size_t kKeyBytes = 16;
inline constexpr size_t kMaxKeysPerCall = 4096;     // Lookup, PutStart, Put, Get, Delete, Pin
inline constexpr size_t kMaxIdsPerCall = 4096;      // PutCommit, PutAbort, Release
inline constexpr uint32_t kMaxLeaseMs = 600000;
inline constexpr size_t kMaxModelBytes = 256;
inline constexpr uint32_t kMaxBlockTokens = 1u << 20;

// Namespace: 1..256 bytes, no control bytes.
absl::Status ValidateNamespaceField(absl::string_view ns);
// Packed keys: a multiple of 16 bytes, 1..4096 keys. Returns the key count.
absl::StatusOr<size_t> ValidatePackedKeys(absl::string_view field, absl::string_view keys);
// Key i of a validated packed field (canonical bytes -> BlockKey).
inline BlockKey PackedKey(absl::string_view keys, size_t i) {
  return BlockKey::FromBytes(reinterpret_cast<const uint8_t*>(keys.data()) + i * kKeyBytes);
}

absl::Status ValidateLookup(const v1::LookupRequest& req);
// `max_block_bytes`: the largest block the whole call may carry. The service passes
// the protocol's 256 MiB (kHardMaxBlockBytes): its configured max_block_bytes is a
// per-item refusal (the store's INVALID_ARGUMENT), since a client cannot know it and
// one such block must not fail the rest of the batch.
absl::Status ValidatePutStart(const v1::PutStartRequest& req, uint64_t max_block_bytes);
absl::Status ValidatePut(const v1::PutRequest& req, uint64_t max_block_bytes);
absl::Status ValidateGet(const v1::GetRequest& req);
absl::Status ValidateDelete(const v1::DeleteRequest& req);
absl::Status ValidatePin(const v1::PinRequest& req);
// Reservation or lease ids: 1..4096 of them, none 0.
absl::Status ValidateIds(absl::string_view field, const google::protobuf::RepeatedField<uint64_t>& ids);
// One PutData chunk's shape (the reservation bounds are checked against the reservation).
absl::Status ValidatePutDataChunk(const v1::PutDataChunk& chunk);

}  // namespace kvhub::cachesvc
