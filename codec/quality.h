#pragma once
// Quality harness: how much a codec's reconstruction changes attention.
// Per (layer, KV head) with the given queries (GQA: all query heads sharing
// the KV head), in float64:
//   attention output O = softmax(Q K^T / sqrt(d)) V over the block's tokens;
//   attn_rel_l2  = ||O' - O||_F / ||O||_F over that head's queries;
//   one_minus_cos = mean over queries of 1 - cos(O_q, O'_q);
//   kl           = mean over queries of KL(p_q || p'_q) (nats);
//   k_rel_l2, v_rel_l2 = ||K' - K|| / ||K||, same for V.
// Reported as median and p99 (nearest rank) over all (layer, head).
// Thread-compatible; pure functions.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "codec/kv_view.h"

namespace kvhub::codec {

struct Queries {
  uint32_t per_kv_head = 0;
  std::vector<float> data;  // [layer][kv_head][query][dim], post-RoPE
};

struct Stat {
  double median = 0;
  double p99 = 0;
};

struct QualityReport {
  Stat attn_rel_l2, one_minus_cos, kl, k_rel_l2, v_rel_l2;
  std::string ToJson() const;  // {"attn_rel_l2":{"median":..,"p99":..},...}
};

// Compares `test` (same shape, bf16) against `ref` (bf16).
absl::StatusOr<QualityReport> CompareAttention(const KvShape& shape, const uint8_t* ref,
                                               const uint8_t* test, const Queries& queries);

// Proxy queries for KV data that came without queries: for each (layer, head),
// q_j = mean_t K_t + 0.5 * (K_{t_j} - mean_t K_t) for n random tokens t_j
// (they share the keys' outlier channels, as real queries do).
Queries ProxyQueriesFromKeys(const KvShape& shape, const uint8_t* kv, uint32_t n, uint64_t seed);

// Reference point, not a codec: keys quantized per token (asymmetric int4,
// groups of `group` channels, same math and sink handling as kivi4 values),
// values untouched. Returns the reconstructed bf16 block; INVALID_ARGUMENT where
// kivi4 refuses the data too (a group's minimum or range past fp16): such a group
// was left exact, flattering the ablation.
absl::StatusOr<std::vector<uint8_t>> PerTokenInt4KeyAblation(const KvShape& shape, const uint8_t* kv,
                                                             uint32_t group, uint32_t sink_tokens);

}  // namespace kvhub::codec
