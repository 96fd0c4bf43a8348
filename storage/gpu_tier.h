#pragma once
// The `gpu` tier (DESIGN §5): block bytes in device memory from a CUDA memory
// pool, moved through pinned host staging buffers. Off unless configured
// (kvhubd: gpu_tier_bytes > 0). Blocks are stored whole, by (namespace, key);
// a reader may decode them in place on the GPU (codec/cuda) through Find().
//
// Builds without CUDA (no nvcc at configure time) compile gpu_tier_unavailable.cc,
// whose Create() fails with FAILED_PRECONDITION saying so.
//
// Failure semantics: Create: FAILED_PRECONDITION without a usable device (the
// message starts "no CUDA device" or says the build has no CUDA),
// INVALID_ARGUMENT for a bad config. Put: RESOURCE_EXHAUSTED when the block
// does not fit the remaining capacity (nothing stored; an existing block of
// the same key is kept), ALREADY_EXISTS for a key already stored. Get/Find/
// Erase: NOT_FOUND. Device errors: INTERNAL with the CUDA error string; an
// Erase whose free fails forgets the block all the same (its bytes stay counted
// in used_bytes: the device may still hold them). Every call makes the tier's device
// current for the call; the calling thread gets back the context it had (none, if
// it had none).
// Thread safety: all methods are thread-safe; transfers are serialized over
// the one staging buffer.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/keys.h"

namespace kvhub::storage {

struct GpuTierConfig {
  // Device bytes the tier may hold (block bytes, not counting pool rounding).
  // 0 = tier off (Create refuses). At most 1 TiB.
  uint64_t capacity_bytes = 0;
  // CUDA device ordinal.
  int device = 0;
  // Pinned host staging buffer; transfers move in chunks of this size.
  // 64 KiB .. 1 GiB; default 8 MiB.
  uint64_t staging_bytes = 8ull << 20;

  absl::Status Validate() const;
};

struct GpuTierStats {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t blocks = 0;
  std::string device_name;
};

// A block's bytes in device memory; valid until the block is erased.
struct DeviceBytes {
  const uint8_t* ptr = nullptr;
  uint64_t size = 0;
};

class GpuTier {
 public:
  static absl::StatusOr<std::unique_ptr<GpuTier>> Create(const GpuTierConfig& config);
  virtual ~GpuTier() = default;

  // Copies `bytes` (host memory) into the tier.
  virtual absl::Status Put(absl::string_view ns, const BlockKey& key,
                           absl::Span<const uint8_t> bytes) = 0;
  // Copies the block into `out` (exactly its size, see Size) and returns its size.
  virtual absl::StatusOr<uint64_t> Get(absl::string_view ns, const BlockKey& key,
                                       absl::Span<uint8_t> out) = 0;
  virtual absl::StatusOr<uint64_t> Size(absl::string_view ns, const BlockKey& key) const = 0;
  // Device address of a stored block (for GPU decode). The caller must not
  // erase the block while using it.
  virtual absl::StatusOr<DeviceBytes> Find(absl::string_view ns, const BlockKey& key) const = 0;
  virtual absl::Status Erase(absl::string_view ns, const BlockKey& key) = 0;
  virtual GpuTierStats Stats() const = 0;
};

}  // namespace kvhub::storage
