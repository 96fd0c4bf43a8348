#pragma once
// Block and chunk keys, bit-exact to DESIGN §2. Every implementation (C++,
// Python, trace tools) must reproduce tests/vectors/block_keys.json.
//
// Thread-safe, pure functions. Only full blocks get keys: for N tokens and
// block_tokens B, BlockKeys returns floor(N / B) keys; the partial tail is not cached.

#include <cstdint>
#include <span>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "common/model_spec.h"
#include "common/u128.h"

namespace kvhub {

using BlockKey = U128;

// Longest namespace accepted anywhere (API limit; DESIGN §8).
inline constexpr size_t kMaxNamespaceBytes = 256;

// OK, or INVALID_ARGUMENT: empty, longer than kMaxNamespaceBytes, holding control
// bytes, or not valid UTF-8 (the API carries namespaces as protobuf strings).
absl::Status ValidateNamespace(absl::string_view ns);

// root = XXH3_128("kvhub.v1" | u32le(len(ns)) | ns | fingerprint)
U128 ChainRoot(absl::string_view ns, const U128& fingerprint);

// key = XXH3_128(prev | tokens as i32le); tokens is one block.
BlockKey NextBlockKey(const U128& prev, std::span<const int32_t> block_tokens);

// Keys of every full block of `tokens`, chained from ChainRoot(ns, spec.Fingerprint()).
std::vector<BlockKey> BlockKeys(absl::string_view ns, const ModelSpec& spec,
                                std::span<const int32_t> tokens);

// Same, with a precomputed fingerprint and block size; appends to *out.
void AppendBlockKeys(absl::string_view ns, const U128& fingerprint, uint32_t block_tokens,
                     std::span<const int32_t> tokens, std::vector<BlockKey>* out);

// chunk key = XXH3_128("kvhub.chunk.v1" | u32le(len(ns)) | ns | fingerprint | tokens as i32le)
BlockKey ChunkKey(absl::string_view ns, const U128& fingerprint, std::span<const int32_t> tokens);

}  // namespace kvhub
