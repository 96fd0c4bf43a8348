#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace kvhub {
void SetLogLevel(const std::string& level) {
  spdlog::set_level(spdlog::level::from_str(level));
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
