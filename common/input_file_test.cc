#include "common/input_file.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

using ::testing::HasSubstr;

TEST(InputFileTest, ReadsTheWholeFile) {
  const std::string path = ::testing::TempDir() + "/input_file_test_" + std::to_string(getpid());
  std::string data(200000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  std::ofstream(path, std::ios::binary) << data;
  absl::StatusOr<std::string> got = ReadInput(path);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == data);
  EXPECT_TRUE(absl::IsResourceExhausted(ReadInput(path, 1000).status()));
  std::ofstream(path, std::ios::binary | std::ios::trunc).flush();
  got = ReadInput(path);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "");
  std::remove(path.c_str());
}

TEST(InputFileTest, MissingFileAndDirectoryAreClearErrors) {
  absl::Status s = ReadInput("/nonexistent-dir/x").status();
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("'/nonexistent-dir/x'"));
  s = ReadInput(::testing::TempDir()).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("directory"));
}

// A file that may not be read is PERMISSION_DENIED (was DATA_LOSS, which says the
// bytes are damaged). Root reads any mode, so a child reads it as nobody then.
TEST(InputFileTest, AnUnreadableFileIsPermissionDenied) {
  const std::string path = ::testing::TempDir() + "/input_file_unreadable_" + std::to_string(getpid());
  std::ofstream(path) << "secret";
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(3);
    const absl::Status st = ReadInput(path).status();
    _exit(absl::IsPermissionDenied(st) ? 0 : absl::IsDataLoss(st) ? 1 : 2);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  std::remove(path.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: DATA_LOSS, 2: another status, 3: could not become nobody";
}

// A key given where a CA bundle belongs (and the reverse) is named at once, not
// left to fail every handshake later.
TEST(InputFileTest, PemFilesMustHoldTheKindAsked) {
  const std::string path = ::testing::TempDir() + "/input_file_pem_" + std::to_string(getpid());
  std::ofstream(path) << "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
  EXPECT_TRUE(ReadPemFile(path, "tls_key_file", PemKind::kPrivateKey).ok());
  absl::Status s = ReadPemFile(path, "tls_ca_file", PemKind::kCertificate).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("tls_ca_file: " + path + " holds no certificate"));
  std::ofstream(path, std::ios::trunc) << "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
  EXPECT_TRUE(ReadPemFile(path, "tls_ca_file", PemKind::kCertificate).ok());
  EXPECT_THAT(std::string(ReadPemFile(path, "tls_key_file", PemKind::kPrivateKey).status().message()),
              HasSubstr("holds no private key"));
  std::ofstream(path, std::ios::trunc) << "not pem\n";
  EXPECT_THAT(std::string(ReadPemFile(path, "tls_ca_file", PemKind::kCertificate).status().message()),
              HasSubstr("holds no PEM block"));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvhub
