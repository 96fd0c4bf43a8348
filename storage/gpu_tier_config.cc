#include "absl/strings/str_cat.h"
#include "storage/gpu_tier.h"

namespace kvhub::storage {

absl::Status GpuTierConfig::Validate() const {
  if (capacity_bytes == 0) {
    return absl::InvalidArgumentError("gpu tier: capacity_bytes must be > 0 (0 means the tier is off)");
  }
  if (capacity_bytes > (1ull << 40)) {
    return absl::InvalidArgumentError(absl::StrCat("gpu tier: capacity_bytes ", capacity_bytes, " > 1 TiB"));
  }
  if (device < 0) return absl::InvalidArgumentError("gpu tier: device must be >= 0");
  if (staging_bytes < (64ull << 10) || staging_bytes > (1ull << 30)) {
    return absl::InvalidArgumentError("gpu tier: staging_bytes must be in [64 KiB, 1 GiB]");
  }
  return absl::OkStatus();
}

}  // namespace kvhub::storage
