#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <algorithm>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"

namespace kvhub {
namespace {
// With spdlog's own spellings "warning" and "err", which earlier versions accepted.
constexpr const char* kLevels[] = {"trace", "debug", "info", "warn", "warning", "error", "err", "critical", "off"};
}  // namespace

bool IsLogLevel(absl::string_view level) {
  return std::find(std::begin(kLevels), std::end(kLevels), level) != std::end(kLevels);
}

absl::Status SetLogLevel(absl::string_view level) {
  if (!IsLogLevel(level)) {
    spdlog::set_level(spdlog::level::info);
    return absl::InvalidArgumentError(
        absl::StrCat("log level '", level, "' is not trace|debug|info|warn|error|critical|off; logging at info"));
  }
  spdlog::set_level(spdlog::level::from_str(std::string(level)));
  return absl::OkStatus();
}

void LogToStderr(const std::string& program) {
  std::shared_ptr<spdlog::logger> logger = spdlog::get(program);
  if (logger == nullptr) {
    logger = std::make_shared<spdlog::logger>(program, std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    logger->set_level(spdlog::default_logger()->level());
  }
  spdlog::set_default_logger(std::move(logger));
}
}  // namespace kvhub
