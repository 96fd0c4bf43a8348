#include "common/hash.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "common/copy.h"

// Debian's libxxhash.so also carries xxHash's x86 runtime dispatch (AVX2 /
// AVX-512 kernels chosen by CPUID); our inline copy is compiled for the
// baseline ISA (SSE2). Same function, same results: 88 vs 21 GB/s on 1 MiB here
// (docs/results.md). The reference must be strong: a weak one let the linker's
// --as-needed drop libxxhash.so from every binary, so the dispatch never ran.
#if defined(__x86_64__)
#define KVHUB_XXH3_DISPATCH 1
extern "C" XXH64_hash_t XXH3_64bits_dispatch(const void* input, size_t len);
extern "C" XXH_errorcode XXH3_64bits_update_dispatch(XXH3_state_t* state, const void* input, size_t len);
#else
#define KVHUB_XXH3_DISPATCH 0
#endif

namespace kvhub {

static_assert(sizeof(XXH3_state_t) <= 640, "grow Xxh3_128Stream::state_");
static_assert(alignof(XXH3_state_t) <= 64, "align Xxh3_128Stream::state_");

uint64_t Xxh3_64(const void* data, size_t len) {
  // Below a few KiB the call and dispatch cost more than the wider vectors save.
#if KVHUB_XXH3_DISPATCH
  if (len >= 4096) return XXH3_64bits_dispatch(data, len);
#endif
  return XXH3_64bits(data, len);
}

uint64_t CopyAndXxh3_64(void* dst, const void* src, size_t len) {
  // Up to one piece the one-shot hash of the (now cached) copy is as fast.
  constexpr size_t kChunk = kCopyPieceBytes;
  if (len <= kChunk) {
    std::memcpy(dst, src, len);
    return Xxh3_64(dst, len);
  }
  Xxh3_64Stream hash;
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  for (size_t off = 0; off < len; off += kChunk) {
    const size_t n = std::min(kChunk, len - off);
    std::memcpy(d + off, s + off, n);
    hash.Update(d + off, n);
  }
  return hash.Digest();
}

bool Xxh3_64UsesRuntimeDispatch() { return KVHUB_XXH3_DISPATCH != 0; }

U128 Xxh3_128(const void* data, size_t len) {
  XXH128_hash_t h = XXH3_128bits(data, len);
  return U128{h.low64, h.high64};
}

Xxh3_64Stream::Xxh3_64Stream() {
  auto* st = new (state_) XXH3_state_t;
  XXH3_INITSTATE(st);
  XXH3_64bits_reset(st);
}

Xxh3_64Stream::~Xxh3_64Stream() = default;

void Xxh3_64Stream::Update(const void* data, size_t len) {
  auto* st = reinterpret_cast<XXH3_state_t*>(state_);
#if KVHUB_XXH3_DISPATCH
  XXH3_64bits_update_dispatch(st, data, len);
#else
  XXH3_64bits_update(st, data, len);
#endif
}

uint64_t Xxh3_64Stream::Digest() const {
  return XXH3_64bits_digest(reinterpret_cast<const XXH3_state_t*>(state_));
}

Xxh3_128Stream::Xxh3_128Stream() {
  auto* st = new (state_) XXH3_state_t;
  XXH3_INITSTATE(st);
  XXH3_128bits_reset(st);
}

Xxh3_128Stream::~Xxh3_128Stream() = default;

void Xxh3_128Stream::Update(const void* data, size_t len) {
  XXH3_128bits_update(reinterpret_cast<XXH3_state_t*>(state_), data, len);
}

void Xxh3_128Stream::UpdateU32Le(uint32_t v) {
  uint8_t b[4] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                  static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
  Update(b, 4);
}

void Xxh3_128Stream::UpdateU128(const U128& v) {
  uint8_t b[16];
  v.ToBytes(b);
  Update(b, 16);
}

U128 Xxh3_128Stream::Digest() const {
  XXH128_hash_t h = XXH3_128bits_digest(reinterpret_cast<const XXH3_state_t*>(state_));
  return U128{h.low64, h.high64};
}

}  // namespace kvhub
