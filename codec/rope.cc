#include "codec/rope.h"

#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codec/numeric.h"

namespace kvhub::codec {
namespace {

absl::Status CheckArgs(uint32_t tokens, uint32_t head_dim, const RopeParams& rope,
                       int64_t pos_first, int64_t pos_step) {
  if (head_dim == 0 || head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("rope: head_dim ", head_dim, " must be even"));
  }
  if (!std::isfinite(rope.base) || rope.base <= 0) {
    return absl::InvalidArgumentError("rope: base must be finite and > 0");
  }
  if (rope.pairing != RopePairing::kNeox && rope.pairing != RopePairing::kInterleaved) {
    return absl::InvalidArgumentError("rope: unknown pairing");
  }
  if (pos_first > kMaxPosition || pos_first < -kMaxPosition || pos_step > 1 || pos_step < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("rope: position ", pos_first, " (step ", pos_step, ") out of range"));
  }
  (void)tokens;
  return absl::OkStatus();
}

// cs[(t * half + i) * 2 + {0,1}] = {cos, sin} of (pos_first + t*pos_step) * theta_i.
std::vector<float> Table(uint32_t tokens, uint32_t head_dim, const RopeParams& rope,
                         int64_t pos_first, int64_t pos_step) {
  const uint32_t half = head_dim / 2;
  std::vector<double> theta(half);
  for (uint32_t i = 0; i < half; ++i) {
    theta[i] = std::pow(rope.base, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
  }
  std::vector<float> cs(size_t{tokens} * half * 2);
  for (uint32_t t = 0; t < tokens; ++t) {
    double p = static_cast<double>(pos_first + static_cast<int64_t>(t) * pos_step);
    for (uint32_t i = 0; i < half; ++i) {
      double a = p * theta[i];
      cs[(size_t{t} * half + i) * 2] = static_cast<float>(std::cos(a));
      cs[(size_t{t} * half + i) * 2 + 1] = static_cast<float>(std::sin(a));
    }
  }
  return cs;
}

// The table's angles come from positions up to 2^52 and any finite base: a base far
// from real models' (1e-300, say) overflows them, and cos/sin of inf is NaN.
absl::Status CheckTable(const std::vector<float>& cs) {
  for (float v : cs) {
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError("rope: the rotation angles overflow for this base and position");
    }
  }
  return absl::OkStatus();
}

// Returns false when a rotated key is inf or NaN: the key was not finite, or is so
// large that its rotation overflows bf16. Such a key is never served (or stored).
[[nodiscard]] bool Rotate(uint16_t* keys, uint32_t tokens, uint32_t heads, uint32_t head_dim,
                          RopePairing pairing, const std::vector<float>& cs) {
  const uint32_t half = head_dim / 2;
  uint16_t non_finite = 0;
  for (uint32_t t = 0; t < tokens; ++t) {
    const float* row = cs.data() + size_t{t} * half * 2;
    for (uint32_t h = 0; h < heads; ++h) {
      uint16_t* k = keys + (size_t{t} * heads + h) * head_dim;
      for (uint32_t i = 0; i < half; ++i) {
        uint32_t a = pairing == RopePairing::kNeox ? i : 2 * i;
        uint32_t b = pairing == RopePairing::kNeox ? i + half : 2 * i + 1;
        float c = row[2 * i], s = row[2 * i + 1];
        float x0 = Bf16ToFloat(k[a]), x1 = Bf16ToFloat(k[b]);
        float p0 = x0 * c, p1 = x1 * s, p2 = x0 * s, p3 = x1 * c;
        k[a] = FloatToBf16(p0 - p1);
        k[b] = FloatToBf16(p2 + p3);
        non_finite |= static_cast<uint16_t>(((k[a] & 0x7F80) == 0x7F80) | ((k[b] & 0x7F80) == 0x7F80));
      }
    }
  }
  return non_finite == 0;
}

absl::Status NonFiniteKeys() {
  return absl::InvalidArgumentError(
      "rope: a key is inf or NaN after rotation (a key that is not finite, or one so large that rotating "
      "it overflows bf16)");
}

}  // namespace

absl::Status CheckPosition(int64_t position, const char* what) {
  if (position >= 0 && position <= kMaxPosition) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " ", position, " out of range [0, 2^52]: token positions start at 0"));
}

absl::StatusOr<std::vector<float>> RopeCosSinTable(uint32_t tokens, uint32_t head_dim,
                                                   const RopeParams& rope, int64_t pos_first,
                                                   int64_t pos_step) {
  if (auto s = CheckArgs(tokens, head_dim, rope, pos_first, pos_step); !s.ok()) return s;
  std::vector<float> cs = Table(tokens, head_dim, rope, pos_first, pos_step);
  if (auto s = CheckTable(cs); !s.ok()) return s;
  return cs;
}

absl::Status RotateKeysBf16(uint16_t* keys, uint32_t tokens, uint32_t heads, uint32_t head_dim,
                            const RopeParams& rope, int64_t pos_first, int64_t pos_step) {
  absl::StatusOr<std::vector<float>> cs = RopeCosSinTable(tokens, head_dim, rope, pos_first, pos_step);
  if (!cs.ok()) return cs.status();
  return Rotate(keys, tokens, heads, head_dim, rope.pairing, *cs) ? absl::OkStatus() : NonFiniteKeys();
}

absl::Status RotateAllKeys(const KvMutableView& kv, const RopeParams& rope, int64_t pos_first,
                           int64_t pos_step) {
  if (auto s = kv.shape.Validate(); !s.ok()) return s;
  if (kv.shape.dtype != DType::kBf16) {
    return absl::InvalidArgumentError("rope: only bf16 keys can be rotated");
  }
  if (kv.size != kv.shape.RawBytes()) {
    return absl::InvalidArgumentError("rope: buffer size does not match the shape");
  }
  absl::StatusOr<std::vector<float>> cs =
      RopeCosSinTable(kv.shape.tokens, kv.shape.head_dim, rope, pos_first, pos_step);
  if (!cs.ok()) return cs.status();
  bool finite = true;
  for (uint32_t l = 0; l < kv.shape.layers; ++l) {
    finite &= Rotate(reinterpret_cast<uint16_t*>(kv.Segment(2 * l)), kv.shape.tokens, kv.shape.kv_heads,
                     kv.shape.head_dim, rope.pairing, *cs);
  }
  return finite ? absl::OkStatus() : NonFiniteKeys();
}

}  // namespace kvhub::codec
