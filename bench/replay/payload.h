#pragma once
// Deterministic, verifiable block payloads for live replay (docs/replay.md,
// "Payloads").
//
// A payload is a real encoded kvhub block (codec/codec.h) of synthetic KV
// (codec/synthetic_kv.h) for a model spec derived from `bytes_per_token`; every
// block key gets its own bytes, computed from the key alone (and the block's
// index in its chain, which the key implies), so a fetched block is checked
// byte for byte against what was published:
//  - at Create, two templates are encoded once: the first block of a chain
//    (base position 0: kivi keeps its attention-sink token there) and a later
//    block (base position 512);
//  - Make(key, index) copies the template, stamps the 16 key bytes over the last
//    16 bytes of the last segment (quantized codes for fp8/int8/kivi, K/V
//    elements for raw), writes base_position = index * 512 into the header, and
//    recomputes the body and header checksums. The result parses and decodes
//    (codec::Decode) like any block; it costs one copy and one XXH3-64 pass.
//
// Thread safety: const methods are safe to call concurrently.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "codec/block_format.h"
#include "common/keys.h"
#include "common/model_spec.h"

namespace kvhub::replay {

struct PayloadConfig {
  std::string codec = "raw";        // raw | fp8 | int8 | kivi4 | kivi2
  // Raw (bf16) KV bytes per token, K and V of every layer: a multiple of 64
  // (2 tensors x head_dim x 2 bytes). 131072 = 32 layers x 8 heads x 128 dim.
  uint64_t bytes_per_token = 4096;
  uint32_t block_tokens = 512;
  uint64_t seed = 1;                // synthetic KV generator seed
  absl::Status Validate() const;
};

// The model spec a bytes_per_token maps to: bf16; head_dim the largest of 128,
// 64, 32, 16 with bytes_per_token a multiple of 4 x head_dim; kv_heads x layers =
// bytes_per_token / (4 x head_dim) with kv_heads the largest of 8, 4, 2, 1
// dividing it that leaves at least as many layers as heads.
absl::StatusOr<ModelSpec> ReplayModelSpec(const PayloadConfig& config);

class PayloadFactory {
 public:
  // Encodes the two templates. INVALID_ARGUMENT for a bad config.
  static absl::StatusOr<std::unique_ptr<PayloadFactory>> Create(const PayloadConfig& config);

  const ModelSpec& spec() const { return spec_; }
  // Payload sizes (bytes) of a chain's first block and of every later block.
  uint64_t first_block_bytes() const { return first_.size(); }
  uint64_t block_bytes() const { return later_.size(); }
  uint64_t SizeOf(uint64_t index) const { return index == 0 ? first_.size() : later_.size(); }

  // Writes the payload of block `key` at chain position `index` into *out.
  void Make(const BlockKey& key, uint64_t index, std::vector<uint8_t>* out) const;
  // True when `bytes` equals Make(key, index); uses *scratch.
  bool Verify(const BlockKey& key, uint64_t index, std::span<const uint8_t> bytes,
              std::vector<uint8_t>* scratch) const;

 private:
  PayloadFactory() = default;
  ModelSpec spec_;
  PayloadConfig config_;
  codec::BlockHeader first_header_, later_header_;
  std::vector<uint8_t> first_, later_;
};

}  // namespace kvhub::replay
