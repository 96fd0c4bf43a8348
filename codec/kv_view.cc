#include "codec/kv_view.h"

#include "absl/strings/str_cat.h"

namespace kvhub::codec {

absl::Status KvShape::Validate() const {
  auto range = [](absl::string_view name, uint32_t v, uint32_t hi) -> absl::Status {
    if (v < 1 || v > hi) {
      return absl::InvalidArgumentError(
          absl::StrCat("kv shape: ", name, "=", v, " out of range [1, ", hi, "]"));
    }
    return absl::OkStatus();
  };
  if (auto s = range("layers", layers, kMaxLayers); !s.ok()) return s;
  if (auto s = range("kv_heads", kv_heads, kMaxHeads); !s.ok()) return s;
  if (auto s = range("head_dim", head_dim, kMaxHeadDim); !s.ok()) return s;
  if (auto s = range("tokens", tokens, kMaxTokens); !s.ok()) return s;
  if (dtype != DType::kBf16 && dtype != DType::kFp16 && dtype != DType::kFp32) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv shape: unknown dtype ", static_cast<int>(dtype)));
  }
  return absl::OkStatus();
}

}  // namespace kvhub::codec
