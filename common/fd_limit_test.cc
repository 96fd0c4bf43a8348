#include "common/fd_limit.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace kvhub {
namespace {

// Sets the soft limit for a test and puts the original back.
class SoftLimit {
 public:
  explicit SoftLimit(uint64_t soft) {
    getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit r = saved_;
    r.rlim_cur = static_cast<rlim_t>(soft);
    ok_ = setrlimit(RLIMIT_NOFILE, &r) == 0;
  }
  ~SoftLimit() { setrlimit(RLIMIT_NOFILE, &saved_); }
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  bool ok_ = false;
};

TEST(OpenFileLimit, RaisesTheSoftLimitToTheHardOneUpToTheCap) {
  absl::StatusOr<OpenFileLimits> before = ReadOpenFileLimits();
  ASSERT_TRUE(before.ok()) << before.status();
  if (before->hard < 512) GTEST_SKIP() << "hard limit " << before->hard << " leaves no room to test";
  SoftLimit low(256);
  ASSERT_TRUE(low.ok());
  absl::StatusOr<OpenFileLimits> capped = RaiseOpenFileLimit(400);
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ(capped->soft, 400u);
  EXPECT_EQ(capped->hard, before->hard);  // the hard limit is never touched
  absl::StatusOr<OpenFileLimits> full = RaiseOpenFileLimit(before->hard);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->soft, before->hard);
}

TEST(OpenFileLimit, NeverLowersTheSoftLimit) {
  absl::StatusOr<OpenFileLimits> before = ReadOpenFileLimits();
  ASSERT_TRUE(before.ok()) << before.status();
  if (before->hard < 300) GTEST_SKIP() << "hard limit " << before->hard << " leaves no room to test";
  SoftLimit mid(300);
  ASSERT_TRUE(mid.ok());
  absl::StatusOr<OpenFileLimits> after = RaiseOpenFileLimit(100);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->soft, 300u);
}

TEST(OpenFileLimit, CountsOpenDescriptors) {
  const uint64_t before = CountOpenFiles();
  ASSERT_GT(before, 2u);  // stdin, stdout, stderr at least
  const int fd = open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(CountOpenFiles(), before + 1);
  close(fd);
  EXPECT_EQ(CountOpenFiles(), before);
}

}  // namespace
}  // namespace kvhub
