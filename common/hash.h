#pragma once
// XXH3 hashing, wrapped once so every component hashes bytes the same way
// (DESIGN §2, §3: seed 0 everywhere). Thread-safe; no allocation.

#include <cstddef>
#include <cstdint>
#include "absl/strings/string_view.h"

#include "common/u128.h"

namespace kvhub {

// XXH3-64 of `data`, seed 0 (block checksums).
uint64_t Xxh3_64(const void* data, size_t len);
// Copies `len` bytes from `src` to `dst` (non-overlapping) and returns
// Xxh3_64 of them, hashing each chunk right after it lands, while it is still
// in cache: one pass over memory instead of two.
uint64_t CopyAndXxh3_64(void* dst, const void* src, size_t len);
// True when Xxh3_64 of 4 KiB and more runs libxxhash.so's runtime-dispatched
// (AVX2 / AVX-512) kernel: x86-64 builds. Same results either way.
bool Xxh3_64UsesRuntimeDispatch();

// XXH3-128 of `data`, seed 0.
U128 Xxh3_128(const void* data, size_t len);

// Incremental XXH3-64 (seed 0) over several pieces; Digest() equals Xxh3_64 of
// their concatenation (a block received in pieces, hashed as each lands).
// Uses the runtime-dispatched kernel like Xxh3_64. Lives on the stack; not
// thread-safe (one owner).
class Xxh3_64Stream {
 public:
  Xxh3_64Stream();
  ~Xxh3_64Stream();
  Xxh3_64Stream(const Xxh3_64Stream&) = delete;
  Xxh3_64Stream& operator=(const Xxh3_64Stream&) = delete;

  void Update(const void* data, size_t len);
  uint64_t Digest() const;

 private:
  alignas(64) unsigned char state_[640];
};

// Incremental XXH3-128 (seed 0) over several pieces; equal to Xxh3_128 of their
// concatenation. Lives on the stack; not thread-safe (one owner).
class Xxh3_128Stream {
 public:
  Xxh3_128Stream();
  ~Xxh3_128Stream();
  Xxh3_128Stream(const Xxh3_128Stream&) = delete;
  Xxh3_128Stream& operator=(const Xxh3_128Stream&) = delete;

  void Update(const void* data, size_t len);
  void Update(absl::string_view s) { Update(s.data(), s.size()); }
  void UpdateU32Le(uint32_t v);
  void UpdateU128(const U128& v);  // 16 bytes, low 64 first, little-endian
  U128 Digest() const;

 private:
  alignas(64) unsigned char state_[640];
};

}  // namespace kvhub
