#pragma once
// GrantGenerations: the generation half of reservation and lease ids
// (id = generation << 32 | slot). Generations are drawn from the kernel's CSPRNG
// (getrandom), so a client cannot guess the id of another client's reservation or
// lease from its own: with sequential generations a namespace-mate could commit or
// abort another's half-written put or release another's lease while it read. A guess
// now succeeds with probability 2^-32, and a grant lives minutes at most.
//
// The randomness is drawn 4 KiB at a time, so Next costs a few nanoseconds and never
// allocates. If the kernel refuses (no getrandom, a seccomp filter), generations come
// from a clock-seeded generator instead and an error is logged once: ids then work as
// before but are predictable.
//
// Thread safety: none; the store calls it under its own lock.

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>

namespace kvhub::storage {

class GrantGenerations {
 public:
  // Fills buf[0..n) with random bytes; returns bytes written or -1 with errno
  // (getrandom(2)'s contract). Tests inject short reads and failures.
  using Source = std::function<ssize_t(void* buf, size_t n)>;

  GrantGenerations();  // the kernel's getrandom
  explicit GrantGenerations(Source source);

  // A generation that is never 0 and never `previous`.
  uint32_t Next(uint32_t previous);

  // False once the kernel's randomness failed and the fallback is in use.
  bool unpredictable() const { return !fallback_; }

 private:
  void Refill();

  Source source_;
  std::array<uint32_t, 1024> pool_{};
  size_t next_ = pool_.size();
  bool fallback_ = false;
  uint64_t fallback_state_ = 0;
};

}  // namespace kvhub::storage
