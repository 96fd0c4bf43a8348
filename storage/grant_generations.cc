#include "storage/grant_generations.h"

#include <sys/random.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "common/log.h"
#include "common/splitmix.h"

namespace kvhub::storage {

GrantGenerations::GrantGenerations()
    : GrantGenerations([](void* buf, size_t n) { return ::getrandom(buf, n, 0); }) {}

GrantGenerations::GrantGenerations(Source source) : source_(std::move(source)) {}

void GrantGenerations::Refill() {
  next_ = 0;
  if (!fallback_) {
    auto* bytes = reinterpret_cast<uint8_t*>(pool_.data());
    const size_t want = sizeof(pool_);
    size_t got = 0;
    while (got < want) {
      const ssize_t n = source_(bytes + got, want - got);
      if (n > 0) {
        got += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        const int err = n < 0 ? errno : EIO;
        KVHUB_LOG(error,
                  "kvhub store: the kernel's randomness failed ({}): reservation and lease ids are "
                  "predictable from now on, so a client could end another client's grants in its namespace",
                  std::strerror(err));
        fallback_ = true;
        fallback_state_ = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                          reinterpret_cast<uintptr_t>(this);
        break;
      }
    }
    if (!fallback_) return;
  }
  for (uint32_t& g : pool_) g = static_cast<uint32_t>(SplitMix64(&fallback_state_) >> 32);
}

uint32_t GrantGenerations::Next(uint32_t previous) {
  for (;;) {
    if (next_ == pool_.size()) Refill();
    const uint32_t g = pool_[next_++];
    if (g != 0 && g != previous) return g;
  }
}

}  // namespace kvhub::storage
