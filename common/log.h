#pragma once
// Logging for every kvhub component: spdlog (Debian's libspdlog-dev), because
// absl 20220623 has no absl/log. Use KVHUB_LOG(info, "fmt {}", x). Thread-safe.
//
// Library code (client, transport, storage) logs through spdlog's default logger, which
// spdlog writes to stdout unless the program changes it. Every kvhub program calls
// LogToStderr first thing in main, so stdout carries only its output (tables, JSON,
// fetched block bytes, the ready line). A program embedding the client should do the
// same, or set its own default logger.

#include <spdlog/spdlog.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

#include <string>

#define KVHUB_LOG(level, ...) ::spdlog::level(__VA_ARGS__)

namespace kvhub {
// The level names SetLogLevel takes: trace|debug|info|warn|error|critical|off
// (and spdlog's "warning" and "err").
bool IsLogLevel(absl::string_view level);
// Sets the global level from one of those names. Anything else sets info and
// returns INVALID_ARGUMENT naming the valid levels (spdlog alone would turn
// logging off for a name it does not know).
absl::Status SetLogLevel(absl::string_view level);

// Makes spdlog's default logger write to stderr under `program`'s name. Idempotent;
// keeps the current level. Call it before starting threads that log.
void LogToStderr(const std::string& program);
}  // namespace kvhub
