#pragma once
// Logging for every kvhub component: spdlog (Debian's libspdlog-dev), because
// absl 20220623 has no absl/log. Use KVHUB_LOG(info, "fmt {}", x). Thread-safe.

#include <spdlog/spdlog.h>

#define KVHUB_LOG(level, ...) ::spdlog::level(__VA_ARGS__)

namespace kvhub {
// Sets the global level from "trace|debug|info|warn|error|off"; unknown -> info.
void SetLogLevel(const std::string& level);
}  // namespace kvhub
