#pragma once
// Named policy variants for the replay tool: the storage library's policies
// (through its factory) and the adaptive policy, by short names:
//   lru, s3fifo, as3fifo, duel, each optionally with +prefix
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/eviction_policy.h"

namespace kvhub::replay {

absl::StatusOr<std::unique_ptr<storage::EvictionPolicy>> MakeReplayPolicy(const std::string& name);
std::vector<std::string> DefaultReplayPolicies();

}  // namespace kvhub::replay
