#pragma once
// Random bits from the kernel (getrandom(2)), for values a peer must not guess:
// connection keys, temporary file names.

#include <cstdint>

#include "absl/status/statusor.h"

namespace kvhub {
// 64 random bits. Blocks only until the kernel's pool is first initialized (early
// boot); INTERNAL when the kernel gives none (no getrandom, a seccomp filter).
// Thread-safe.
absl::StatusOr<uint64_t> KernelRandom64();
}  // namespace kvhub
