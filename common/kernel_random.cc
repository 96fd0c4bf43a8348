#include "common/kernel_random.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvhub {

absl::StatusOr<uint64_t> KernelRandom64() {
  uint64_t v = 0;
  for (;;) {
    const ssize_t n = ::getrandom(&v, sizeof(v), 0);
    if (n == static_cast<ssize_t>(sizeof(v))) return v;
    if (n < 0 && errno == EINTR) continue;
    return absl::InternalError(
        absl::StrCat("no random bits from the kernel (getrandom: ", n < 0 ? std::strerror(errno) : "short read", ")"));
  }
}

}  // namespace kvhub
