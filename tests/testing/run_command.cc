#include "tests/testing/run_command.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>

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

}  // namespace kvhub::testing
