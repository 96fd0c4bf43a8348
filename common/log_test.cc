#include "common/log.h"

#include <gtest/gtest.h>

namespace kvhub {
namespace {

TEST(LogTest, KnownLevelsAreSet) {
  ASSERT_TRUE(SetLogLevel("warn").ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::warn);
  ASSERT_TRUE(SetLogLevel("critical").ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::critical);
  ASSERT_TRUE(SetLogLevel("off").ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::off);
  ASSERT_TRUE(SetLogLevel("trace").ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::trace);
}

// spdlog's own parser turns logging off for a name it does not know: a typo in
// KVHUB_LOG_LEVEL silenced every error of the CLI and the Python module.
TEST(LogTest, AnUnknownLevelLogsAtInfoAndSaysSo) {
  for (const char* bad : {"INFO", "verbose", "", "warning "}) {
    ASSERT_TRUE(SetLogLevel("off").ok());
    const absl::Status s = SetLogLevel(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("trace|debug|info|warn|error|critical|off"), absl::string_view::npos) << s;
    EXPECT_EQ(spdlog::get_level(), spdlog::level::info) << bad;
  }
  EXPECT_TRUE(IsLogLevel("error"));
  EXPECT_TRUE(IsLogLevel("err"));  // spdlog's spelling
  ASSERT_TRUE(SetLogLevel("warning").ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::warn);
}

}  // namespace
}  // namespace kvhub
