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

#include <string>

#define KVHUB_LOG(level, ...) ::spdlog::level(__VA_ARGS__)

namespace kvhub {
// Sets the global level from "trace|debug|info|warn|error|off"; unknown -> info.
void SetLogLevel(const std::string& level);

// Makes spdlog's default logger write to stderr under `program`'s name. Idempotent;
// keeps the current level. Call it before starting threads that log.
void LogToStderr(const std::string& program);
}  // namespace kvhub
