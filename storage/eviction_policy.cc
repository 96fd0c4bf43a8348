#include "storage/eviction_policy.h"

#include "absl/strings/str_cat.h"
#include "storage/adaptive_s3fifo_policy.h"
#include "storage/dueling_policy.h"
#include "storage/lru_policy.h"
#include "storage/s3fifo_policy.h"

namespace kvhub::storage {

absl::Status EvictionPolicyConfig::Validate() const {
  if (name != "lru" && name != "s3fifo" && name != "as3fifo" && name != "duel") {
    return absl::InvalidArgumentError(absl::StrCat(
        "eviction policy must be \"lru\", \"s3fifo\", \"as3fifo\" or \"duel\", got \"", name, "\""));
  }
  if (!(s3fifo_small_ratio > 0.0 && s3fifo_small_ratio < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("s3fifo_small_ratio must be in (0, 1), got ", s3fifo_small_ratio));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(
    const EvictionPolicyConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (config.name == "lru") return std::make_unique<LruPolicy>(config.prefix_aware);
  if (config.name == "as3fifo") {
    AdaptiveS3FifoConfig a;  // its own defaults (adaptive_s3fifo_policy.h)
    a.prefix_aware = config.prefix_aware;
    return std::make_unique<AdaptiveS3FifoPolicy>(a);
  }
  if (config.name == "duel") {
    DuelingConfig d;  // its own defaults (dueling_policy.h)
    d.as3fifo.prefix_aware = config.prefix_aware;
    d.s3fifo_small_ratio = config.s3fifo_small_ratio;
    return std::make_unique<DuelingPolicy>(d);
  }
  return std::make_unique<S3FifoPolicy>(config.s3fifo_small_ratio, config.prefix_aware);
}

}  // namespace kvhub::storage
