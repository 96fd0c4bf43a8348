#include "common/output_file.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

using ::testing::HasSubstr;

bool HaveDevFull() { return access("/dev/full", W_OK) == 0; }

TEST(OutputFileTest, WritesTheWholeFile) {
  const std::string path = ::testing::TempDir() + "/output_file_test_" + std::to_string(getpid());
  std::string data(300000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13);
  ASSERT_TRUE(WriteOutput(path, data).ok());
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_TRUE(ss.str() == data);
  ASSERT_TRUE(WriteOutput(path, "").ok());  // truncates
  EXPECT_EQ(std::ifstream(path, std::ios::ate | std::ios::binary).tellg(), 0);
  std::remove(path.c_str());
}

TEST(OutputFileTest, AFullDiskIsDataLoss) {
  if (!HaveDevFull()) GTEST_SKIP() << "no /dev/full on this machine";
  absl::Status s = WriteOutput("/dev/full", std::string(100000, 'x'));
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("'/dev/full'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("No space left on device"));
  // Even a few bytes, which only fail when flushed at close.
  EXPECT_TRUE(absl::IsDataLoss(WriteOutput("/dev/full", "{}\n")));
}

TEST(OutputFileTest, AnUncreatableFileIsDataLossWithTheReason) {
  absl::Status s = WriteOutput("/nonexistent-dir/out.json", "{}");
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("No such file or directory"));
}

// Runs `body` in a child whose stdout is /dev/full; returns its exit code.
int ExitCodeWithStdoutOnDevFull(void (*body)()) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open("/dev/full", O_WRONLY);
    if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0) _exit(99);
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, STDERR_FILENO);  // keep the test's log clean
    body();
    _exit(ExitCodeAfterStdout(0, "output_file_test"));
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(OutputFileTest, LostStandardOutputFailsTheProgram) {
  if (!HaveDevFull()) GTEST_SKIP() << "no /dev/full on this machine";
  EXPECT_EQ(ExitCodeWithStdoutOnDevFull([] { std::printf("a table\n"); }), 1);
  EXPECT_EQ(ExitCodeWithStdoutOnDevFull([] { (void)WriteOutput("-", "block bytes"); }), 1);
  EXPECT_EQ(ExitCodeWithStdoutOnDevFull([] {}), 0);  // nothing written, nothing lost
  EXPECT_EQ(ExitCodeAfterStdout(3, "output_file_test"), 3);
}

}  // namespace
}  // namespace kvhub
