#pragma once
// The model spec: everything that shapes a KV block (DESIGN §1), and its
// fingerprint, XXH3-128 of the canonical text of DESIGN §2. Two engines that
// disagree on any field must never share blocks, so every field is hashed.

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/u128.h"

namespace kvhub {

enum class DType : uint8_t { kBf16 = 1, kFp16 = 2, kFp32 = 3 };
enum class RopePairing : uint8_t { kNeox = 1, kInterleaved = 2 };

absl::string_view DTypeName(DType d);            // "bf16" | "fp16" | "fp32"
absl::StatusOr<DType> ParseDType(absl::string_view s);
size_t DTypeBytes(DType d);                     // 2, 2, 4
absl::string_view RopePairingName(RopePairing p);  // "neox" | "interleaved"
absl::StatusOr<RopePairing> ParseRopePairing(absl::string_view s);

struct ModelSpec {
  std::string model;        // non-empty, <= kMaxModelNameBytes, no '|', '=', whitespace or control bytes
  uint32_t layers = 0;      // 1 .. 1024
  uint32_t kv_heads = 0;    // KV heads held by this TP rank, 1 .. 1024
  uint32_t head_dim = 0;    // 1 .. 1024
  DType dtype = DType::kBf16;
  double rope_base = 10000.0;  // finite, > 0
  RopePairing rope_pairing = RopePairing::kNeox;
  uint32_t tp_rank = 0;     // < tp_world
  uint32_t tp_world = 1;    // 1 .. 1024
  uint32_t block_tokens = 256;  // 1 .. 65536

  static constexpr size_t kMaxModelNameBytes = 256;

  // OK, or INVALID_ARGUMENT naming the first bad field.
  absl::Status Validate() const;

  // DESIGN §2 canonical text. Call only on a valid spec.
  std::string CanonicalText() const;
  // XXH3-128 of CanonicalText().
  U128 Fingerprint() const;

  // Bytes of one raw block: layers * 2 (K,V) * block_tokens * kv_heads * head_dim * dtype bytes.
  uint64_t RawBlockBytes() const;

  // Parses the compact form used by the CLI and config files, e.g.
  //   "model=llama3-8b,layers=32,kv_heads=8,head_dim=128,dtype=bf16,rope_base=500000,
  //    rope_pairing=neox,tp_rank=0,tp_world=1,block_tokens=256"
  // Missing fields keep their defaults; the result is validated.
  static absl::StatusOr<ModelSpec> Parse(absl::string_view text);
  // The compact form of every field, which Parse reads back to this very spec
  // (rope_base to the bit). Call only on a valid spec.
  std::string CompactText() const;
};

}  // namespace kvhub
