#include "tests/testing/run_command.h"

#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvhub::testing {

CommandResult RunCommand(const std::string& command) {
  CommandResult r;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.exit_code = st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string ProgramPath(const std::string& program) {
  const char* dir = std::getenv("KVHUB_BIN_DIR");
  return std::string(dir != nullptr ? dir : "bin") + "/" + program;
}

absl::StatusOr<int> WaitChildUntil(pid_t pid, absl::Time deadline) {
  int status = 0;
  pid_t got = 0;
  while ((got = waitpid(pid, &status, WNOHANG)) == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  if (got == pid) return status;
  if (got < 0) return absl::InternalError(absl::StrCat("waitpid(", pid, "): ", std::strerror(errno)));
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return absl::DeadlineExceededError(absl::StrCat("process ", pid, " still running at its deadline (killed)"));
}

}  // namespace kvhub::testing
