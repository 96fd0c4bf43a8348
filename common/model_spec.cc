#include "common/model_spec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/hash.h"
#include "common/utf8.h"

namespace kvhub {

absl::string_view DTypeName(DType d) {
  switch (d) {
    case DType::kBf16: return "bf16";
    case DType::kFp16: return "fp16";
    case DType::kFp32: return "fp32";
  }
  return "invalid";
}

absl::StatusOr<DType> ParseDType(absl::string_view s) {
  if (s == "bf16") return DType::kBf16;
  if (s == "fp16") return DType::kFp16;
  if (s == "fp32") return DType::kFp32;
  return absl::InvalidArgumentError(absl::StrCat("dtype must be bf16, fp16 or fp32, got '", s, "'"));
}

size_t DTypeBytes(DType d) { return d == DType::kFp32 ? 4 : 2; }

absl::string_view RopePairingName(RopePairing p) {
  return p == RopePairing::kNeox ? "neox" : "interleaved";
}

absl::StatusOr<RopePairing> ParseRopePairing(absl::string_view s) {
  if (s == "neox") return RopePairing::kNeox;
  if (s == "interleaved") return RopePairing::kInterleaved;
  return absl::InvalidArgumentError(
      absl::StrCat("rope_pairing must be neox or interleaved, got '", s, "'"));
}

absl::Status ModelSpec::Validate() const {
  if (model.empty()) return absl::InvalidArgumentError("model spec: model name is empty");
  if (model.size() > kMaxModelNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("model spec: model name is ", model.size(),
                                                   " bytes, limit ", kMaxModelNameBytes));
  }
  for (unsigned char c : model) {
    if (c <= 0x20 || c == 0x7f || c == '|' || c == '=' || c == ',') {
      return absl::InvalidArgumentError(absl::StrCat(
          "model spec: model name may not contain whitespace, control bytes, '|', '=' or ','"));
    }
  }
  if (!IsUtf8(model)) {
    // DESIGN §2: the canonical text is UTF-8 (engines in other languages hash the
    // UTF-8 encoding of the name; protobuf refuses it otherwise).
    return absl::InvalidArgumentError("model spec: model name is not valid UTF-8");
  }
  auto range = [](absl::string_view name, uint32_t v, uint32_t lo, uint32_t hi) -> absl::Status {
    if (v < lo || v > hi) {
      return absl::InvalidArgumentError(
          absl::StrCat("model spec: ", name, "=", v, " out of range [", lo, ", ", hi, "]"));
    }
    return absl::OkStatus();
  };
  if (auto s = range("layers", layers, 1, 1024); !s.ok()) return s;
  if (auto s = range("kv_heads", kv_heads, 1, 1024); !s.ok()) return s;
  if (auto s = range("head_dim", head_dim, 1, 1024); !s.ok()) return s;
  if (auto s = range("tp_world", tp_world, 1, 1024); !s.ok()) return s;
  if (auto s = range("block_tokens", block_tokens, 1, 65536); !s.ok()) return s;
  if (tp_rank >= tp_world) {
    return absl::InvalidArgumentError(
        absl::StrCat("model spec: tp_rank=", tp_rank, " must be < tp_world=", tp_world));
  }
  if (!std::isfinite(rope_base) || rope_base <= 0) {
    return absl::InvalidArgumentError("model spec: rope_base must be finite and > 0");
  }
  if (dtype != DType::kBf16 && dtype != DType::kFp16 && dtype != DType::kFp32) {
    return absl::InvalidArgumentError("model spec: bad dtype");
  }
  if (rope_pairing != RopePairing::kNeox && rope_pairing != RopePairing::kInterleaved) {
    return absl::InvalidArgumentError("model spec: bad rope_pairing");
  }
  return absl::OkStatus();
}

std::string ModelSpec::CanonicalText() const {
  return absl::StrCat("kvhub.spec.v1|model=", model, "|layers=", layers, "|kv_heads=", kv_heads,
                      "|head_dim=", head_dim, "|dtype=", DTypeName(dtype), "|rope_base=",
                      absl::StrFormat("%016x", std::bit_cast<uint64_t>(rope_base)),
                      "|rope_pairing=", RopePairingName(rope_pairing), "|tp_rank=", tp_rank,
                      "|tp_world=", tp_world, "|block_tokens=", block_tokens);
}

U128 ModelSpec::Fingerprint() const {
  std::string text = CanonicalText();
  return Xxh3_128(text.data(), text.size());
}

uint64_t ModelSpec::RawBlockBytes() const {
  return uint64_t{layers} * 2 * block_tokens * kv_heads * head_dim * DTypeBytes(dtype);
}

std::string ModelSpec::CompactText() const {
  return absl::StrCat("model=", model, ",layers=", layers, ",kv_heads=", kv_heads, ",head_dim=", head_dim,
                      ",dtype=", DTypeName(dtype), ",rope_base=", absl::StrFormat("%.17g", rope_base),
                      ",rope_pairing=", RopePairingName(rope_pairing), ",tp_rank=", tp_rank, ",tp_world=", tp_world,
                      ",block_tokens=", block_tokens);
}

absl::StatusOr<ModelSpec> ModelSpec::Parse(absl::string_view text) {
  ModelSpec spec;
  std::vector<absl::string_view> seen;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    absl::string_view k = kv.first, v = kv.second;  // not a structured binding: clang-14 cannot capture those
    // A field given twice is an error, not "the last wins": two engines whose
    // specs differ that way would hash to different keys without a word.
    if (std::find(seen.begin(), seen.end(), k) != seen.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model spec: field '", k, "' given twice"));
    }
    seen.push_back(k);
    auto u32 = [&](uint32_t* out) -> absl::Status {
      if (!absl::SimpleAtoi(v, out)) {
        return absl::InvalidArgumentError(absl::StrCat("model spec: ", k, "='", v, "' is not an unsigned integer"));
      }
      return absl::OkStatus();
    };
    absl::Status s;
    if (k == "model") {
      spec.model = std::string(v);
    } else if (k == "layers") {
      s = u32(&spec.layers);
    } else if (k == "kv_heads") {
      s = u32(&spec.kv_heads);
    } else if (k == "head_dim") {
      s = u32(&spec.head_dim);
    } else if (k == "tp_rank") {
      s = u32(&spec.tp_rank);
    } else if (k == "tp_world") {
      s = u32(&spec.tp_world);
    } else if (k == "block_tokens") {
      s = u32(&spec.block_tokens);
    } else if (k == "dtype") {
      auto d = ParseDType(v);
      if (!d.ok()) return d.status();
      spec.dtype = *d;
    } else if (k == "rope_pairing") {
      auto p = ParseRopePairing(v);
      if (!p.ok()) return p.status();
      spec.rope_pairing = *p;
    } else if (k == "rope_base") {
      if (!absl::SimpleAtod(v, &spec.rope_base)) {
        return absl::InvalidArgumentError(absl::StrCat("model spec: rope_base='", v, "' is not a number"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("model spec: unknown field '", k, "'"));
    }
    if (!s.ok()) return s;
  }
  if (auto s = spec.Validate(); !s.ok()) return s;
  return spec;
}

}  // namespace kvhub
