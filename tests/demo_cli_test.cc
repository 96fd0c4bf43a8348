// kvhub-demo's refusals: flags out of range are usage errors (exit 2) and a cluster
// that does not answer stops it at once (exit 1), before any workload runs.

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/run_command.h"

namespace kvhub {
namespace {

testing::CommandResult RunDemo(const std::string& args) {
  return testing::RunCommand(absl::StrCat(testing::ProgramPath("kvhub-demo"), " ", args, " 2>&1"));
}

TEST(DemoCliTest, FlagsOutOfRangeAreUsageErrors) {
  for (const char* bad : {"--conversations=0", "--turns=0", "--clients=-3", "--system_prompts=0"}) {
    testing::CommandResult r = RunDemo(absl::StrCat("--members=127.0.0.1:1 ", bad));
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.out;
    EXPECT_NE(r.out.find("must be"), std::string::npos) << r.out;
  }
}

TEST(DemoCliTest, AClusterThatDoesNotAnswerStopsItAtOnce) {
  testing::CommandResult r = RunDemo("--members=127.0.0.1:1");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("do not answer: 127.0.0.1:1"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("== results"), std::string::npos) << "no workload ran: " << r.out;
}

}  // namespace
}  // namespace kvhub
