#include "common/output_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

using ::testing::HasSubstr;

// WriteOutput of 100000 bytes to `path` under a 4 KiB RLIMIT_FSIZE (SIGXFSZ
// ignored: EFBIG), as a disk that fills up part way would fail it.
absl::Status WritePastTheFileSizeLimit(const std::string& path) {
  struct rlimit saved {};
  if (getrlimit(RLIMIT_FSIZE, &saved) != 0) return absl::InternalError("getrlimit");
  struct rlimit small = saved;
  small.rlim_cur = 4096;
  auto* previous = signal(SIGXFSZ, SIG_IGN);
  if (setrlimit(RLIMIT_FSIZE, &small) != 0) return absl::InternalError("setrlimit");
  absl::Status s = WriteOutput(path, std::string(100000, 'x'));
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, previous);
  return s;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Entries of `dir` other than . and ..
int EntriesIn(const std::string& dir) {
  int entries = 0;
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* e = readdir(d)) entries += std::string(e->d_name) != "." && std::string(e->d_name) != "..";
    closedir(d);
  }
  return entries;
}

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

// The temporary beside the path had a guessable name (PATH.tmp.PID) and was
// opened with O_TRUNC: a link planted there in a shared directory was followed
// and its target truncated. Now the name is random and the file created
// exclusively, so the planted link and its target stay untouched.
TEST(OutputFileTest, APlantedLinkAtTheOldTemporaryNameIsNotFollowed) {
  const std::string dir = ::testing::TempDir() + "/output_file_plant_" + std::to_string(getpid());
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  const std::string victim = dir + "/victim", path = dir + "/out";
  std::ofstream(victim) << "precious";
  std::ofstream(path) << "old";
  const std::string planted = path + ".tmp." + std::to_string(getpid());
  ASSERT_EQ(symlink(victim.c_str(), planted.c_str()), 0);
  ASSERT_TRUE(WriteOutput(path, "new").ok());
  std::stringstream v, o;
  v << std::ifstream(victim).rdbuf();
  o << std::ifstream(path).rdbuf();
  EXPECT_EQ(v.str(), "precious");
  EXPECT_EQ(o.str(), "new");
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) names.emplace_back(e->d_name);
    closedir(d);
  }
  EXPECT_EQ(names.size(), 5u) << "., .., victim, out and the planted link only";
  std::remove(planted.c_str());
  std::remove(victim.c_str());
  std::remove(path.c_str());
  rmdir(dir.c_str());
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

// A write that fails part way (here: past RLIMIT_FSIZE, as a full disk would)
// leaves the earlier file as it was and no partial file beside it.
TEST(OutputFileTest, AFailedWriteLeavesTheEarlierFileIntact) {
  const std::string dir = ::testing::TempDir() + "/output_file_fail_" + std::to_string(getpid());
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  const std::string path = dir + "/result.json";
  ASSERT_TRUE(WriteOutput(path, "earlier\n").ok());
  const absl::Status s = WritePastTheFileSizeLimit(path);
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("File too large"));
  EXPECT_EQ(ReadAll(path), "earlier\n");
  EXPECT_EQ(EntriesIn(dir), 1) << "a partial file was left beside the result";
  std::remove(path.c_str());
  rmdir(dir.c_str());
}

// A file bind-mounted at PATH (docker run -v r.json:/out/r.json) cannot be renamed
// over (EBUSY): the complete output was deleted with its temporary and the run's
// results lost. It is written in place now. Needs a mount namespace (a forked child
// unshares one); skips where the kernel or container refuses it.
TEST(OutputFileTest, ABindMountedFileIsWrittenInPlace) {
  const std::string dir = ::testing::TempDir() + "/output_file_bind_" + std::to_string(getpid());
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  const std::string source = dir + "/source", path = dir + "/mounted";
  ASSERT_TRUE(WriteOutput(source, "old\n").ok());
  ASSERT_TRUE(WriteOutput(path, "placeholder\n").ok());
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(pipe_fds[0]);
    // 0 written, 1 OK, 2 setup refused, 3 WriteOutput failed.
    char result = 2;
    if (unshare(CLONE_NEWNS) == 0 && mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
        mount(source.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) == 0) {
      result = WriteOutput(path, "new\n").ok() ? 1 : 3;
      umount(path.c_str());
    }
    (void)!write(pipe_fds[1], &result, 1);
    _exit(0);
  }
  close(pipe_fds[1]);
  char result = 0;
  (void)!read(pipe_fds[0], &result, 1);
  close(pipe_fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  std::ifstream in(source, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::remove(source.c_str());
  std::remove(path.c_str());
  int entries = 0;
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* e = readdir(d)) entries += std::string(e->d_name) != "." && std::string(e->d_name) != "..";
    closedir(d);
  }
  rmdir(dir.c_str());
  if (result == 2) GTEST_SKIP() << "no mount namespace here (unshare/mount refused)";
  EXPECT_EQ(result, 1) << "WriteOutput failed on a bind-mounted file";
  EXPECT_EQ(ss.str(), "new\n") << "the file mounted there holds what was written";
  EXPECT_EQ(entries, 0) << "a temporary was left behind";
}

// The temporary was created with the old file's mode under the umask (a 0666 file
// became 0644) and named PATH.tmp.PID.RANDOM (a 240-byte name, which the directory
// takes, could not be written: ENAMETOOLONG).
TEST(OutputFileTest, AReplacedFileKeepsItsModeAndAnyNameTheDirectoryTakesCanBeWritten) {
  const std::string dir = ::testing::TempDir() + "/output_file_mode_" + std::to_string(getpid());
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  const std::string path = dir + "/shared.json";
  ASSERT_TRUE(WriteOutput(path, "old").ok());
  ASSERT_EQ(chmod(path.c_str(), 0666), 0);
  const mode_t old_umask = umask(022);
  absl::Status s = WriteOutput(path, "new");
  umask(old_umask);
  ASSERT_TRUE(s.ok()) << s;
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0666u);
  EXPECT_EQ(st.st_uid, geteuid());

  const std::string long_path = dir + "/" + std::string(240, 'x');
  s = WriteOutput(long_path, "long");
  EXPECT_TRUE(s.ok()) << s;
  std::stringstream ss;
  ss << std::ifstream(long_path).rdbuf();
  EXPECT_EQ(ss.str(), "long");
  std::remove(long_path.c_str());
  std::remove(path.c_str());
  rmdir(dir.c_str());
}

TEST(OutputFileTest, ASymbolicLinkIsWrittenThroughNotReplaced) {
  const std::string dir = ::testing::TempDir() + "/output_file_link_" + std::to_string(getpid());
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  const std::string target = dir + "/target", link = dir + "/link";
  ASSERT_TRUE(WriteOutput(target, "old").ok());
  ASSERT_EQ(symlink(target.c_str(), link.c_str()), 0);
  ASSERT_TRUE(WriteOutput(link, "new").ok());
  struct stat st {};
  ASSERT_EQ(lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  std::ifstream in(target, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "new");
  std::remove(link.c_str());
  std::remove(target.c_str());
  rmdir(dir.c_str());
}

// Through a link, a failed write (past RLIMIT_FSIZE, as a full disk) leaves the
// file the link names as it was (it was truncated in place) and the link a link.
TEST(OutputFileTest, AFailedWriteThroughALinkLeavesItsFileIntact) {
  const std::string dir = ::testing::TempDir() + "/output_file_link_fail_" + std::to_string(getpid());
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  const std::string target = dir + "/target", link = dir + "/link";
  ASSERT_TRUE(WriteOutput(target, "earlier\n").ok());
  ASSERT_EQ(symlink("target", link.c_str()), 0);  // relative, as `ln -s target link` makes
  const absl::Status s = WritePastTheFileSizeLimit(link);
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_EQ(ReadAll(target), "earlier\n");
  struct stat st {};
  ASSERT_EQ(lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(EntriesIn(dir), 2) << "a partial file was left beside the target";
  std::remove(link.c_str());
  std::remove(target.c_str());
  rmdir(dir.c_str());
}

TEST(OutputFileTest, AnUncreatableFileIsDataLossWithTheReason) {
  absl::Status s = WriteOutput("/nonexistent-dir/out.json", "{}");
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("No such file or directory"));
}

TEST(OutputFileTest, CheckOutputPathRefusesWhatCannotBeWritten) {
  EXPECT_TRUE(CheckOutputPath("-").ok());
  EXPECT_TRUE(CheckOutputPath(::testing::TempDir() + "/new-file.json").ok());
  EXPECT_TRUE(CheckOutputPath("/dev/null").ok());
  // Symbolic links: to a directory (refused), to a file to be created (fine), to a
  // file in a directory that does not exist (refused).
  const std::string dir = ::testing::TempDir() + "/check_output_" + std::to_string(getpid());
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  ASSERT_EQ(symlink(dir.c_str(), (dir + "/to-dir").c_str()), 0);
  ASSERT_EQ(symlink("new.json", (dir + "/to-new").c_str()), 0);
  ASSERT_EQ(symlink("/nonexistent-dir/x.json", (dir + "/to-nowhere").c_str()), 0);
  EXPECT_THAT(std::string(CheckOutputPath(dir + "/to-dir").message()), HasSubstr("it is a directory"));
  EXPECT_TRUE(CheckOutputPath(dir + "/to-new").ok());
  EXPECT_THAT(std::string(CheckOutputPath(dir + "/to-nowhere").message()), HasSubstr("/nonexistent-dir"));
  for (const char* name : {"/to-dir", "/to-new", "/to-nowhere"}) unlink((dir + name).c_str());
  rmdir(dir.c_str());
  for (const auto& [path, why] : std::vector<std::pair<std::string, std::string>>{
           {"", "empty path"},
           {"/nonexistent-dir/out.json", "/nonexistent-dir: No such file or directory"},
           {"/dev/null/out.json", "/dev/null is not a directory"},
           {::testing::TempDir(), "it is a directory"}}) {
    absl::Status s = CheckOutputPath(path);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << path << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(why)) << path;
  }
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
