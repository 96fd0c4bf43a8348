#pragma once
// SplitMix64 (Steele, Lea and Flood, 2014): a fast, well-mixed 64-bit sequence from a
// 64-bit state, for deterministic test data and non-cryptographic fallbacks. Not a
// source of secrets. Thread safety: the caller owns `state`.

#include <cstdint>

namespace kvhub {

// Advances `state` and returns the next value of its sequence.
inline uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace kvhub
