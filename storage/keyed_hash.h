#pragma once
// Hashes of (block key, namespace tag) for the host tier's hash tables (the index,
// the ghost digests of the eviction policies). Block keys come from clients, which
// may choose them freely: with a fixed public hash a client could send keys that all
// land in one bucket and make every index operation, under the tier's lock, walk a
// cluster of thousands. These hashes are keyed by a random seed drawn once per
// process, so which keys collide cannot be known from outside. Equal inputs hash
// equal within a process; values differ between processes (never persist them).
//
// Thread safety: safe from any thread (the seed is fixed after first use).

#include <cstdint>

#include "common/keys.h"

namespace kvhub::storage {

struct HashSeed {
  uint64_t s[4];
};

// The process's seed: from the OS's random source on first use.
const HashSeed& ProcessHashSeed();

// 64 bits of a keyed mix of (key, ns_tag): two 64x64->128-bit multiply folds with
// seeded operands (as wyhash and XXH3 mix). Never 0 only by chance.
inline uint64_t KeyedHash64(const BlockKey& key, uint64_t ns_tag, const HashSeed& seed = ProcessHashSeed()) {
  const unsigned __int128 a = static_cast<unsigned __int128>(key.lo ^ seed.s[0]) * (key.hi ^ seed.s[1]);
  const uint64_t x = static_cast<uint64_t>(a) ^ static_cast<uint64_t>(a >> 64);
  const unsigned __int128 b = static_cast<unsigned __int128>(x ^ ns_tag ^ seed.s[2]) * (seed.s[3] | 1);
  return static_cast<uint64_t>(b) ^ static_cast<uint64_t>(b >> 64);
}

}  // namespace kvhub::storage
