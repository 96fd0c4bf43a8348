#pragma once
// Rotary position embedding on stored keys (DESIGN §3): de-rotation before
// encoding ("keys stored pre-RoPE") and re-rotation to a new position on decode.
//
// Frequencies theta_i = base^(-2i/D), i < D/2. Pairs: NeoX half-split (i, i+D/2)
// or interleaved (2i, 2i+1). The angle p * theta_i, its cosine and sine are
// computed in float64 and then rounded to float32; the rotation itself is
// float32, x0' = (x0*c) - (x1*s), x1' = (x0*s) + (x1*c), every product and sum
// rounded separately (no FMA), then rounded to bf16 (nearest-even).
// Thread-safe; allocates one cos/sin table per call.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "codec/kv_view.h"
#include "common/model_spec.h"

namespace kvhub::codec {

// Absolute token positions a block may carry: 0 .. kMaxPosition (2^52, where float64
// still holds every integer, so RoPE angles stay exact).
inline constexpr int64_t kMaxPosition = int64_t{1} << 52;

// OK when 0 <= position <= kMaxPosition; else INVALID_ARGUMENT naming `what`.
absl::Status CheckPosition(int64_t position, const char* what);

struct RopeParams {
  double base = 10000.0;
  RopePairing pairing = RopePairing::kNeox;
};

// The rotation table the functions below use (exposed so the CUDA kernels use
// the very same float32 values): cs[(t * D/2 + i) * 2 + {0, 1}] = {cos, sin}
// of (pos_first + t * pos_step) * theta_i for t < tokens, computed in float64
// and rounded to float32. Same argument checks as RotateKeysBf16.
absl::StatusOr<std::vector<float>> RopeCosSinTable(uint32_t tokens, uint32_t head_dim,
                                                   const RopeParams& rope, int64_t pos_first,
                                                   int64_t pos_step);

// Rotates every key of the bf16 tensor `keys` ([token][head][dim]) in place:
// token t by position pos_first + t * pos_step. INVALID_ARGUMENT if head_dim is
// odd, the base is not finite and > 0, a position overflows, the angles overflow
// (an absurd base), or a rotated key is inf or NaN (a key that was not finite, or
// one near bf16's largest that rotation overflows): the keys are then garbage and
// must not be used.
absl::Status RotateKeysBf16(uint16_t* keys, uint32_t tokens, uint32_t heads, uint32_t head_dim,
                            const RopeParams& rope, int64_t pos_first, int64_t pos_step);

// Rotates the keys of every layer of `kv` (bf16) in place: token t of every
// layer by pos_first + t * pos_step.
//   apply RoPE at positions base..:   pos_first = base, pos_step = 1
//   remove it (to pre-RoPE):          pos_first = -base, pos_step = -1
//   move a chunk by delta positions:  pos_first = delta, pos_step = 0
absl::Status RotateAllKeys(const KvMutableView& kv, const RopeParams& rope, int64_t pos_first,
                           int64_t pos_step);

}  // namespace kvhub::codec
