#include "common/u128.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvhub {
namespace {
void PutLe64(uint64_t v, uint8_t* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t GetLe64(const uint8_t* in) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | in[i];
  return v;
}
int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

void U128::ToBytes(uint8_t out[16]) const {
  PutLe64(lo, out);
  PutLe64(hi, out + 8);
}

std::array<uint8_t, 16> U128::Bytes() const {
  std::array<uint8_t, 16> b;
  ToBytes(b.data());
  return b;
}

U128 U128::FromBytes(const uint8_t in[16]) { return U128{GetLe64(in), GetLe64(in + 8)}; }

absl::StatusOr<U128> U128::FromBytes(absl::string_view bytes) {
  if (bytes.size() != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("a 128-bit key must be 16 bytes, got ", bytes.size()));
  }
  return FromBytes(reinterpret_cast<const uint8_t*>(bytes.data()));
}

std::string U128::Hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  uint8_t b[16];
  ToBytes(b);
  std::string s(32, '0');
  for (int i = 0; i < 16; ++i) {
    s[2 * i] = kDigits[b[i] >> 4];
    s[2 * i + 1] = kDigits[b[i] & 15];
  }
  return s;
}

absl::StatusOr<U128> U128::FromHex(absl::string_view hex) {
  if (hex.size() != 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("a 128-bit key is 32 hex digits, got ", hex.size(), " characters"));
  }
  uint8_t b[16];
  for (int i = 0; i < 16; ++i) {
    int h = HexDigit(hex[2 * i]), l = HexDigit(hex[2 * i + 1]);
    if (h < 0 || l < 0) {
      return absl::InvalidArgumentError(absl::StrCat("not a hex digit in key '", hex, "'"));
    }
    b[i] = static_cast<uint8_t>(h << 4 | l);
  }
  return FromBytes(b);
}

}  // namespace kvhub
