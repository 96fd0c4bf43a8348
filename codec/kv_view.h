#pragma once
// Views of one block's K/V tensors in the canonical layout
// [layer][k|v][token][head][dim], elements of `dtype`, little-endian, packed.
// A view does not own its bytes; the caller keeps them alive and unchanged for
// the duration of the call that receives the view.

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "common/model_spec.h"
#include "common/u128.h"

namespace kvhub::codec {

struct KvShape {
  uint32_t layers = 0;     // 1 .. 1024
  uint32_t kv_heads = 0;   // 1 .. 1024
  uint32_t head_dim = 0;   // 1 .. 1024
  uint32_t tokens = 0;     // 1 .. 65536
  DType dtype = DType::kBf16;

  static constexpr uint32_t kMaxLayers = 1024;
  static constexpr uint32_t kMaxHeads = 1024;
  static constexpr uint32_t kMaxHeadDim = 1024;
  static constexpr uint32_t kMaxTokens = 65536;

  // OK, or INVALID_ARGUMENT naming the first field out of range.
  absl::Status Validate() const;

  // Elements of one K or V segment of one layer: tokens * kv_heads * head_dim.
  uint64_t SegmentElements() const {
    return static_cast<uint64_t>(tokens) * kv_heads * head_dim;
  }
  uint64_t SegmentBytes() const { return SegmentElements() * DTypeBytes(dtype); }
  // Whole block: layers * 2 * SegmentBytes(). Fits in 2^50 for valid shapes.
  uint64_t RawBytes() const { return 2ull * layers * SegmentBytes(); }

  friend bool operator==(const KvShape&, const KvShape&) = default;
};

// Input to the encoder.
struct KvView {
  KvShape shape;
  const uint8_t* data = nullptr;  // shape.RawBytes() bytes
  size_t size = 0;                // must equal shape.RawBytes()
  int64_t base_position = 0;      // absolute position of token 0 (RoPE, sinks): 0 .. 2^52
  double rope_base = 10000.0;     // RoPE base of the model (stored for re-rotation)
  RopePairing rope_pairing = RopePairing::kNeox;
  U128 fingerprint;               // ModelSpec::Fingerprint() of the producer

  // Segment s = 2 * layer + (0 for K, 1 for V).
  const uint8_t* Segment(uint32_t s) const { return data + s * shape.SegmentBytes(); }
};

// Output of the decoder: caller-owned buffer of exactly shape.RawBytes() bytes.
struct KvMutableView {
  KvShape shape;
  uint8_t* data = nullptr;
  size_t size = 0;

  uint8_t* Segment(uint32_t s) const { return data + s * shape.SegmentBytes(); }
};

}  // namespace kvhub::codec
