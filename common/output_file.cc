#include "common/output_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "absl/strings/str_cat.h"

namespace kvhub {
namespace {

absl::Status Lost(absl::string_view what, int err) {
  return absl::DataLossError(absl::StrCat("writing ", what, " failed: ", std::strerror(err)));
}

}  // namespace

absl::Status WriteOutput(const std::string& path, absl::string_view data) {
  if (path == "-") {
    std::cout.flush();
    if (!data.empty() && std::fwrite(data.data(), 1, data.size(), stdout) != data.size()) {
      return Lost("standard output", errno);
    }
    return FlushStdout();
  }
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return Lost(absl::StrCat("'", path, "'"), errno);
  int err = 0;
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), f) != data.size()) err = errno;
  if (std::fflush(f) != 0 && err == 0) err = errno;
  if (std::fclose(f) != 0 && err == 0) err = errno;
  if (err != 0) return Lost(absl::StrCat("'", path, "'"), err);
  return absl::OkStatus();
}

absl::Status FlushStdout() {
  std::cout.flush();
  errno = 0;
  const bool flush_failed = std::fflush(stdout) != 0;
  const int err = errno;
  if (flush_failed && err != 0) return Lost("standard output", err);
  if (flush_failed || std::ferror(stdout) || std::cout.fail()) {
    // An earlier write failed; its errno is gone by now.
    return absl::DataLossError("writing standard output failed (a full disk, or a closed pipe?)");
  }
  return absl::OkStatus();
}

int ExitCodeAfterStdout(int rc, const char* program) {
  absl::Status s = FlushStdout();
  if (s.ok()) return rc;
  std::fprintf(stderr, "%s: %s\n", program, s.ToString().c_str());
  return rc == 0 ? 1 : rc;
}

}  // namespace kvhub
