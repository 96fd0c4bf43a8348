#pragma once
// A 128-bit value (block keys, spec fingerprints) and its canonical forms
// (DESIGN §2): 16 bytes, low 64 bits first, each little-endian; printed as those
// 16 bytes in 32 lowercase hex digits.

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace kvhub {

struct U128 {
  uint64_t lo = 0;
  uint64_t hi = 0;

  friend bool operator==(const U128&, const U128&) = default;
  friend bool operator<(const U128& a, const U128& b) {
    return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo;
  }
  template <typename H>
  friend H AbslHashValue(H h, const U128& v) {
    return H::combine(std::move(h), v.lo, v.hi);
  }

  // Canonical 16-byte serialization.
  std::array<uint8_t, 16> Bytes() const;
  void ToBytes(uint8_t out[16]) const;
  static U128 FromBytes(const uint8_t in[16]);
  // Parses exactly 16 bytes; INVALID_ARGUMENT otherwise.
  static absl::StatusOr<U128> FromBytes(absl::string_view bytes);

  // 32 lowercase hex digits of the canonical bytes.
  std::string Hex() const;
  // Parses 32 hex digits (either case); INVALID_ARGUMENT otherwise.
  static absl::StatusOr<U128> FromHex(absl::string_view hex);
};

}  // namespace kvhub
