#pragma once
// Synthetic KV generator that reproduces the documented structure of real
// LLM K/V caches, so codecs can be compared without a model. Every parameter
// and the source it comes from is listed in docs/codecs.md ("Synthetic KV").
//
//  * keys: a few outlier channels (consistent sign, 10-20x the median channel
//    scale) in the low-frequency RoPE dimensions, shared with the queries
//    (KIVI, KVQuant); RoPE applied at the token's position;
//  * values: per-token scale variation, no fixed outlier channels (KIVI);
//  * token 0 at position 0 is an attention sink drawing most attention, with a
//    small value vector (StreamingLLM; Sun et al., "Massive activations");
//  * token-to-token correlation: AR(1) along tokens (CacheGen);
//  * GQA: several query heads per KV head; bf16 storage.
// Deterministic for a given config (own RNG, no std::normal_distribution).

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "codec/kv_view.h"
#include "common/model_spec.h"

namespace kvhub::codec {

struct SyntheticKvConfig {
  uint32_t layers = 32;
  uint32_t kv_heads = 8;
  uint32_t head_dim = 128;            // even
  uint32_t tokens = 256;
  int64_t base_position = 0;          // the sink exists only in a block starting at 0
  double rope_base = 500000.0;        // Llama-3
  RopePairing rope_pairing = RopePairing::kNeox;
  uint64_t seed = 1;
  // Keys.
  uint32_t key_outlier_pairs = 2;     // RoPE pairs (2 channels each) with outliers, per head
  float key_outlier_min = 10.0f;      // outlier |mean| / median channel scale, drawn uniformly
  float key_outlier_max = 20.0f;
  float key_outlier_noise = 0.5f;     // outlier channel noise / median channel scale
  float key_channel_sigma = 0.25f;    // lognormal spread of the other channel scales
  float key_mean_frac = 0.5f;         // per-channel mean ~ N(0, frac * channel scale)
  // Values.
  float value_token_sigma = 0.35f;    // lognormal spread of the per-token scale
  float value_channel_sigma = 0.15f;  // lognormal spread of the channel scales (no outliers)
  float value_mean_frac = 0.3f;
  // Both.
  float token_rho = 0.7f;             // AR(1) correlation between neighbouring tokens
  float layer_sigma = 0.3f;           // lognormal spread of per-layer magnitude
  // Queries.
  uint32_t q_per_kv = 4;              // GQA group size
  uint32_t queries_per_q_head = 4;    // decode-time queries at positions after the block
  float query_scale = 1.5f;           // query channel scale (logit std ~ query_scale * key scale)
  float query_outlier_frac = 0.5f;    // query |mean| on key-outlier channels = frac * ratio * query_scale
  float sink_attention = 0.6f;        // target mean attention mass on the sink token

  absl::Status Validate() const;
  uint32_t QueriesPerKvHead() const { return q_per_kv * queries_per_q_head; }
};

struct SyntheticKv {
  KvShape shape;                  // bf16
  std::vector<uint8_t> kv;        // [layer][k|v][token][head][dim] bf16, keys post-RoPE
  // [layer][kv_head][query][dim] float32, post-RoPE (queries of the GQA group
  // sharing this KV head, at positions base+tokens .. ).
  std::vector<float> queries;
  uint32_t queries_per_kv_head = 0;
  int64_t base_position = 0;  // the first token's position (SyntheticKvConfig::base_position)

  KvView View(double rope_base, RopePairing pairing) const;  // at base_position
};

absl::StatusOr<SyntheticKv> GenerateSyntheticKv(const SyntheticKvConfig& config);

}  // namespace kvhub::codec
