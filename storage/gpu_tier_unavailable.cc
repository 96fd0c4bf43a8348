// GpuTier for builds without CUDA: the tier cannot exist, and says why.
#include "storage/gpu_tier.h"

namespace kvhub::storage {

absl::StatusOr<std::unique_ptr<GpuTier>> GpuTier::Create(const GpuTierConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return absl::FailedPreconditionError(
      "no CUDA device: this kvhub was built without CUDA (nvcc was not found when CMake ran); "
      "rebuild on a machine with the CUDA toolkit, or set gpu_tier_bytes = 0");
}

}  // namespace kvhub::storage
