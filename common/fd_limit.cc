#include "common/fd_limit.h"

#include <dirent.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kvhub {
namespace {

uint64_t FromRlim(rlim_t v) { return v == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(v); }

}  // namespace

absl::StatusOr<OpenFileLimits> ReadOpenFileLimits() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) {
    return absl::InternalError(absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  return OpenFileLimits{FromRlim(r.rlim_cur), FromRlim(r.rlim_max)};
}

absl::StatusOr<OpenFileLimits> RaiseOpenFileLimit(uint64_t cap) {
  absl::StatusOr<OpenFileLimits> now = ReadOpenFileLimits();
  if (!now.ok()) return now.status();
  const uint64_t want = std::min(now->hard, cap);
  if (want <= now->soft) return *now;
  rlimit r{};
  r.rlim_cur = static_cast<rlim_t>(want);
  r.rlim_max = now->hard == UINT64_MAX ? RLIM_INFINITY : static_cast<rlim_t>(now->hard);
  if (setrlimit(RLIMIT_NOFILE, &r) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("setrlimit(RLIMIT_NOFILE) from ", now->soft, " to ", want,
                                                      " (hard ", now->hard, "): ", std::strerror(errno)));
  }
  return ReadOpenFileLimits();
}

std::vector<int> OpenFileDescriptors() {
  std::vector<int> fds;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return fds;
  while (const dirent* e = readdir(dir)) {
    int fd = -1;
    if (absl::SimpleAtoi(e->d_name, &fd) && fd != dirfd(dir)) fds.push_back(fd);  // not the listing's own
  }
  closedir(dir);
  return fds;
}

uint64_t CountOpenFiles() { return OpenFileDescriptors().size(); }

}  // namespace kvhub
