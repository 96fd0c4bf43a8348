#include "codec/codec.h"

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_c_literalCompressionMode
#include <zstd.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "codec/kernels.h"
#include "codec/numeric.h"
#include "codec/rope.h"
#include "codec/segment_layout.h"
#include "common/hash.h"

namespace kvhub::codec {
namespace {

static_assert(std::endian::native == std::endian::little, "the block format is little-endian");

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("kv block: ", what));
}

const Kernels& Pick(KernelChoice k) {
  return k == KernelChoice::kScalar ? ScalarKernels() : SimdKernels();
}

// Per-thread scratch, grown on demand and reused (large buffers would otherwise
// be mmap'ed and page-faulted on every call).
struct Scratch {
  std::vector<uint8_t> codes;   // one byte per element of a segment
  std::vector<uint8_t> plane[4];
  std::vector<uint8_t> input;   // de-rotated copy of the input (pre-RoPE)
  std::vector<float> f0, f1;    // per-channel scale / zero or inverse
  std::vector<int16_t> mn, mx;
  ZSTD_CCtx* cctx = nullptr;
  ZSTD_DCtx* dctx = nullptr;
  ~Scratch() {
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
  }
};
Scratch& TlsScratch() {
  thread_local Scratch s;
  return s;
}
// Scratch kept between calls, per buffer: a 512-token block of a 70B model
// (80 layers, 8 KV heads, head_dim 128, bf16) is 160 MiB raw, and its pre-RoPE
// copy is reused. A buffer grown past this by a larger block is freed when the
// call ends, so each thread's idle memory does not stay at the largest block
// it ever saw.
constexpr size_t kKeepScratchBytes = size_t{256} << 20;
template <typename T>
void Trim(std::vector<T>& v) {
  if (v.capacity() * sizeof(T) > kKeepScratchBytes) std::vector<T>().swap(v);
}
// Trims this thread's scratch when the Encode/Decode call that made it ends.
struct ScratchTrim {
  ~ScratchTrim() {
    Scratch& s = TlsScratch();
    Trim(s.codes);
    for (auto& p : s.plane) Trim(p);
    Trim(s.input);
    Trim(s.f0);
    Trim(s.f1);
    Trim(s.mn);
    Trim(s.mx);
  }
};
template <typename T>
T* Grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

uint32_t SinksInBlock(const CodecParams& p, int64_t base_position, uint32_t tokens) {
  return SinksInBlock(p.codec, p.sink_tokens, base_position, tokens);
}

void PutF32(uint8_t* p, float f) { std::memcpy(p, &f, 4); }
float GetF32(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

// scale = amax / qmax; inv = 1 / scale; both 0 when scale is not a normal
// float. amax is given as the float bits of the largest magnitude.
void SymScaleF(uint32_t amax_bits, float qmax, float* scale, float* inv) {
  float s = std::bit_cast<float>(amax_bits) / qmax;
  if (!(s >= 1.17549435e-38f)) {
    *scale = 0.0f;
    *inv = 0.0f;
  } else {
    *scale = s;
    *inv = 1.0f / s;
  }
}

absl::Status NonFinite(absl::string_view codec) {
  return absl::InvalidArgumentError(
      absl::StrCat("codec ", codec, ": input contains inf or NaN (only lossless/raw keep them)"));
}

// Float bits of the largest |x| of a bf16 row (values are not centered).
uint32_t AbsMaxBits32(const Kernels& K, const uint16_t* x, size_t n) {
  return static_cast<uint32_t>(K.abs_max_bits(x, n)) << 16;
}

// Zero bytes between the arrays of a fixed-size segment.
void ZeroGaps(const SegLayout& L, uint8_t* seg) {
  std::memset(seg + L.sink_bytes, 0, L.scale_off - L.sink_bytes);
  std::memset(seg + L.scale_off + L.scale_bytes, 0, L.zero_off - L.scale_off - L.scale_bytes);
  std::memset(seg + L.zero_off + L.zero_bytes, 0, L.codes_off - L.zero_off - L.zero_bytes);
}

// fp8/int8: the S sink rows go to the front as bf16 (they must be finite);
// their codes are 0.
absl::Status PutSinks(const Kernels& K, absl::string_view codec, const KvShape& sh,
                      const SegLayout& L, uint32_t S, const uint16_t* x, uint8_t* seg) {
  const size_t sink_elems = size_t{S} * sh.kv_heads * sh.head_dim;
  if (S > 0 && K.abs_max_bits(x, sink_elems) >= 0x7F80) return NonFinite(codec);
  std::memcpy(seg, x, L.sink_bytes);
  std::memset(seg + L.codes_off, 0, sink_elems);
  return absl::OkStatus();
}

// Key centres of an fp8/int8 key segment (docs/codecs.md, "Centered keys"):
// per (head, channel) the bf16 midpoint of the min and max over the non-sink
// tokens (0 without any), written to zero[] as bf16 and to mid[] as float.
// Refuses (INVALID_ARGUMENT) a non-sink key that is not finite, or beyond
// +-2^126 (kCenteredKeyMaxBf16: it could decode to inf). Every key of a channel
// lies between its min and max, so checking those two covers all of them at
// O(heads * head_dim) cost; a NaN has an order key beyond +-inf's, so it shows
// there too.
absl::Status KeyCentres(const Kernels& K, CodecId codec, const KvShape& sh, uint32_t S,
                        const uint16_t* x, uint8_t* zero, float* mid) {
  const size_t HD = size_t{sh.kv_heads} * sh.head_dim;
  Scratch& sc = TlsScratch();
  int16_t* mn = Grow(sc.mn, HD);
  int16_t* mx = Grow(sc.mx, HD);
  const bool any = S < sh.tokens;
  if (any) {
    std::fill(mn, mn + HD, INT16_MAX);
    std::fill(mx, mx + HD, INT16_MIN);
    K.col_min_max(x + size_t{S} * HD, sh.tokens - S, HD, HD, mn, mx);
    uint32_t amax = 0;  // magnitude bits of the largest |key|
    for (size_t i = 0; i < HD; ++i) {
      amax = std::max<uint32_t>(amax, OrderKeyToBf16(mn[i]) & 0x7FFFu);
      amax = std::max<uint32_t>(amax, OrderKeyToBf16(mx[i]) & 0x7FFFu);
    }
    if (amax >= 0x7F80u) return NonFinite(CodecName(codec));
    if (amax > kCenteredKeyMaxBf16) return CenteredKeyRangeError(codec);
  }
  for (size_t i = 0; i < HD; ++i) {
    uint16_t m = any ? MidBf16(mn[i], mx[i]) : uint16_t{0};
    PutU16(zero + 2 * i, m);
    mid[i] = Bf16ToFloat(m);
  }
  return absl::OkStatus();
}

// The float centres of a stored key segment.
const float* LoadCentres(const KvShape& sh, const uint8_t* zero) {
  const size_t HD = size_t{sh.kv_heads} * sh.head_dim;
  float* mid = Grow(TlsScratch().f1, HD);
  for (size_t i = 0; i < HD; ++i) mid[i] = Bf16ToFloat(GetU16(zero + 2 * i));
  return mid;
}

// ---------------------------------------------------------------- encoders --

absl::Status EncodeFp8(const Kernels& K, const KvShape& sh, bool is_value, uint32_t S,
                       const uint16_t* x, uint8_t* seg) {
  const uint32_t T = sh.tokens, H = sh.kv_heads, D = sh.head_dim;
  const SegLayout L = Layout(CodecId::kFp8, sh, is_value, 0, S);
  ZeroGaps(L, seg);
  if (auto st = PutSinks(K, "fp8", sh, L, S, x, seg); !st.ok()) return st;
  Scratch& sc = TlsScratch();
  float* mid = nullptr;
  if (!is_value) {
    mid = Grow(sc.f1, size_t{H} * D);
    if (auto st = KeyCentres(K, CodecId::kFp8, sh, S, x, seg + L.zero_off, mid); !st.ok()) return st;
  }
  float* invs = Grow(sc.f0, H);
  for (uint32_t h = 0; h < H; ++h) {
    uint32_t m = 0;
    for (uint32_t t = S; t < T; ++t) {
      const uint16_t* row = x + (size_t{t} * H + h) * D;
      m = std::max(m, mid ? K.abs_max_centered(row, mid + size_t{h} * D, D) : AbsMaxBits32(K, row, D));
    }
    if (m >= 0x7F800000u) return NonFinite("fp8");
    float scale;
    SymScaleF(m, 448.0f, &scale, &invs[h]);
    PutF32(seg + L.scale_off + 4 * h, scale);
  }
  for (uint32_t t = S; t < T; ++t) {
    for (uint32_t h = 0; h < H; ++h) {
      size_t row = (size_t{t} * H + h) * D;
      if (mid) {
        K.quant_fp8_centered(x + row, mid + size_t{h} * D, D, invs[h], seg + L.codes_off + row);
      } else {
        K.quant_fp8(x + row, D, invs[h], seg + L.codes_off + row);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status EncodeInt8(const Kernels& K, const KvShape& sh, bool is_value, uint32_t S,
                        const uint16_t* x, uint8_t* seg) {
  const uint32_t T = sh.tokens, H = sh.kv_heads, D = sh.head_dim;
  const SegLayout L = Layout(CodecId::kInt8, sh, is_value, 0, S);
  ZeroGaps(L, seg);
  if (auto st = PutSinks(K, "int8", sh, L, S, x, seg); !st.ok()) return st;
  std::memset(seg + L.scale_off, 0, 4 * size_t{S} * H);  // sink rows: scale 0
  float* mid = nullptr;
  if (!is_value) {
    mid = Grow(TlsScratch().f1, size_t{H} * D);
    if (auto st = KeyCentres(K, CodecId::kInt8, sh, S, x, seg + L.zero_off, mid); !st.ok()) return st;
  }
  for (size_t r = size_t{S} * H; r < size_t{T} * H; ++r) {
    const float* mh = mid ? mid + (r % H) * D : nullptr;
    uint32_t m = mh ? K.abs_max_centered(x + r * D, mh, D) : AbsMaxBits32(K, x + r * D, D);
    if (m >= 0x7F800000u) return NonFinite("int8");
    float scale, inv;
    SymScaleF(m, 127.0f, &scale, &inv);
    PutF32(seg + L.scale_off + 4 * r, scale);
    int8_t* q = reinterpret_cast<int8_t*>(seg + L.codes_off + r * D);
    if (mh) {
      K.quant_int8_centered(x + r * D, mh, D, inv, q);
    } else {
      K.quant_int8(x + r * D, D, inv, q);
    }
  }
  return absl::OkStatus();
}

absl::Status KiviRangeError() {
  return absl::InvalidArgumentError(
      "codec kivi: input has inf/NaN, or a group's minimum or range exceeds fp16 (|x| >= 65520); "
      "use int8, fp8 or lossless for this data");
}

absl::Status EncodeKivi(const Kernels& K, CodecId codec, const KvShape& sh, bool is_value,
                        uint32_t G, uint32_t S, const uint16_t* x, uint8_t* seg) {
  const uint32_t T = sh.tokens, H = sh.kv_heads, D = sh.head_dim;
  const size_t n = sh.SegmentElements();
  const float qmax = codec == CodecId::kKivi4 ? 15.0f : 3.0f;
  const SegLayout L = Layout(codec, sh, is_value, G, S);
  Scratch& sc = TlsScratch();
  uint8_t* codes = Grow(sc.codes, n);
  // Sink rows (the first S tokens) are stored as they are; they must be finite
  // like everything a lossy codec takes.
  if (S > 0 && K.abs_max_bits(x, size_t{S} * H * D) >= 0x7F80) return NonFinite("kivi");
  std::memcpy(seg, x, L.sink_bytes);
  std::memset(seg + L.sink_bytes, 0, L.scale_off - L.sink_bytes);
  std::memset(seg + L.scale_off + L.scale_bytes, 0, L.zero_off - L.scale_off - L.scale_bytes);
  std::memset(seg + L.zero_off + L.zero_bytes, 0, L.codes_off - L.zero_off - L.zero_bytes);
  uint16_t* sp = reinterpret_cast<uint16_t*>(seg + L.scale_off);
  uint16_t* zp = reinterpret_cast<uint16_t*>(seg + L.zero_off);
  if (!is_value) {
    // Keys: per channel, groups of G tokens; sink tokens do not enter the stats.
    const size_t HD = size_t{H} * D;
    float* inv = Grow(sc.f0, HD);
    float* zero = Grow(sc.f1, HD);
    int16_t* mn = Grow(sc.mn, HD);
    int16_t* mx = Grow(sc.mx, HD);
    for (uint32_t t0 = 0, g = 0; t0 < T; t0 += G, ++g) {
      uint32_t t1 = std::min(T, t0 + G);
      uint32_t r0 = std::max(t0, S);
      if (r0 < t1) {
        std::fill(mn, mn + HD, INT16_MAX);
        std::fill(mx, mx + HD, INT16_MIN);
        for (uint32_t h = 0; h < H; ++h) {
          K.col_min_max(x + (size_t{r0} * H + h) * D, t1 - r0, HD, D, mn + size_t{h} * D,
                        mx + size_t{h} * D);
        }
      } else {
        std::fill(mn, mn + HD, int16_t{0});  // all sinks: stats are 0
        std::fill(mx, mx + HD, int16_t{0});
      }
      if (!K.kivi_stats(mn, mx, HD, qmax, sp + size_t{g} * HD, zp + size_t{g} * HD, inv, zero)) {
        return KiviRangeError();
      }
      for (uint32_t t = t0; t < t1; ++t) {
        for (uint32_t h = 0; h < H; ++h) {
          size_t row = (size_t{t} * H + h) * D;
          K.quant_affine(x + row, D, inv + size_t{h} * D, zero + size_t{h} * D, qmax, codes + row);
        }
      }
    }
  } else {
    // Values: per token and head, groups of G channels. Sink rows get zero
    // stats, hence zero codes (the decoder overwrites them).
    const uint32_t NG = (D + G - 1) / G;
    const size_t rows = size_t{T} * H, sink_rows = size_t{S} * H;
    int16_t* mn = Grow(sc.mn, rows * NG);
    int16_t* mx = Grow(sc.mx, rows * NG);
    float* inv = Grow(sc.f0, rows * NG);
    float* zero = Grow(sc.f1, rows * NG);
    std::fill(mn, mn + sink_rows * NG, int16_t{0});
    std::fill(mx, mx + sink_rows * NG, int16_t{0});
    for (size_t r = sink_rows; r < rows; ++r) K.group_min_max(x + r * D, D, G, mn + r * NG, mx + r * NG);
    if (!K.kivi_stats(mn, mx, rows * NG, qmax, sp, zp, inv, zero)) return KiviRangeError();
    for (size_t r = 0; r < rows; ++r) {
      for (uint32_t j = 0; j < NG; ++j) {
        uint32_t c0 = j * G, len = std::min(D - c0, G);
        K.quant_affine1(x + r * D + c0, len, inv[r * NG + j], zero[r * NG + j], qmax,
                        codes + r * D + c0);
      }
    }
  }
  if (codec == CodecId::kKivi4) {
    K.pack4(codes, n, seg + L.codes_off);
  } else {
    K.pack2(codes, n, seg + L.codes_off);
  }
  return absl::OkStatus();
}

// Lossless segment: u8 plane count, 3 zero bytes, then per plane {u8 mode
// (0 stored, 1 zstd), 3 zero bytes, u32 payload bytes}, then the payloads.
absl::Status EncodeLossless(const Kernels& K, const KvShape& sh, const uint8_t* x, int level,
                            std::vector<uint8_t>* out, size_t seg_off) {
  Scratch& sc = TlsScratch();
  const size_t n = sh.SegmentElements();
  const size_t planes = DTypeBytes(sh.dtype);
  if (planes == 2) {
    K.split_planes16(reinterpret_cast<const uint16_t*>(x), n, Grow(sc.plane[0], n),
                     Grow(sc.plane[1], n));
  } else {
    for (size_t p = 0; p < 4; ++p) Grow(sc.plane[p], n);
    for (size_t i = 0; i < n; ++i) {
      uint32_t v;
      std::memcpy(&v, x + 4 * i, 4);
      v = (v << 1) | (v >> 31);
      for (size_t p = 0; p < 4; ++p) sc.plane[p][i] = static_cast<uint8_t>(v >> (8 * (3 - p)));
    }
  }
  if (sc.cctx == nullptr) sc.cctx = ZSTD_createCCtx();
  if (sc.cctx == nullptr) return absl::ResourceExhaustedError("zstd: cannot create context");
  // Planes have short repeats at best: long minimum matches and a small hash
  // table keep zstd fast and leave the rest to its Huffman literal coder.
  // A parameter zstd refuses would silently leave the previous one in force
  // (another level, or no content size, which decoders require): fail instead.
  if (size_t r = ZSTD_CCtx_reset(sc.cctx, ZSTD_reset_session_and_parameters); ZSTD_isError(r)) {
    return absl::InternalError(absl::StrCat("zstd reset: ", ZSTD_getErrorName(r)));
  }
  const struct {
    ZSTD_cParameter param;
    int value;
    const char* name;
  } params[] = {
      {ZSTD_c_compressionLevel, level, "compressionLevel"},
      {ZSTD_c_minMatch, 7, "minMatch"},
      {ZSTD_c_hashLog, 10, "hashLog"},
      {ZSTD_c_literalCompressionMode, ZSTD_ps_enable, "literalCompressionMode"},
      {ZSTD_c_contentSizeFlag, 1, "contentSizeFlag"},
  };
  for (const auto& prm : params) {
    if (size_t r = ZSTD_CCtx_setParameter(sc.cctx, prm.param, prm.value); ZSTD_isError(r)) {
      return absl::InternalError(
          absl::StrCat("zstd set ", prm.name, "=", prm.value, ": ", ZSTD_getErrorName(r)));
    }
  }
  const size_t table = 4 + 8 * planes;
  size_t pos = seg_off + table;
  out->resize(pos + planes * ZSTD_compressBound(n));
  uint8_t* hdr = out->data() + seg_off;
  std::memset(hdr, 0, table);
  hdr[0] = static_cast<uint8_t>(planes);
  for (size_t p = 0; p < planes; ++p) {
    size_t r = ZSTD_compress2(sc.cctx, out->data() + pos, ZSTD_compressBound(n),
                              sc.plane[p].data(), n);
    if (ZSTD_isError(r)) {
      return absl::InternalError(absl::StrCat("zstd compress: ", ZSTD_getErrorName(r)));
    }
    uint8_t mode = 1;
    if (r >= n) {  // incompressible: store
      std::memcpy(out->data() + pos, sc.plane[p].data(), n);
      r = n;
      mode = 0;
    }
    hdr[4 + 8 * p] = mode;
    PutU32(hdr + 4 + 8 * p + 4, static_cast<uint32_t>(r));
    pos += r;
  }
  out->resize(pos);
  return absl::OkStatus();
}

// ---------------------------------------------------------------- decoders --

// True when [p, p+len) is exactly one zstd frame of the current format (walks the
// frame's block headers, not its data).
bool IsOneZstdFrame(const uint8_t* p, size_t len) {
  if (len < 4 || GetU32(p) != ZSTD_MAGICNUMBER) return false;
  const size_t frame = ZSTD_findFrameCompressedSize(p, len);
  return !ZSTD_isError(frame) && frame == len;
}

// The plane table of a lossless segment: modes, lengths that tile the segment,
// stored planes of the segment's size, zstd frames declaring it. Reads the table
// and the frames' headers and block headers, never their compressed data.
absl::Status CheckLosslessSegment(const KvShape& sh, const uint8_t* seg, uint64_t size) {
  const size_t n = sh.SegmentElements();
  const size_t planes = DTypeBytes(sh.dtype);
  const size_t table = 4 + 8 * planes;
  if (size < table || seg[0] != planes || seg[1] || seg[2] || seg[3]) {
    return Bad("lossless segment: bad plane table");
  }
  uint64_t pos = table;
  for (size_t p = 0; p < planes; ++p) {
    const uint8_t* e = seg + 4 + 8 * p;
    const uint8_t mode = e[0];
    const uint32_t len = GetU32(e + 4);
    if (mode > 1 || e[1] || e[2] || e[3]) return Bad("lossless segment: bad plane mode");
    if (len > size - pos) return Bad("lossless segment: plane overruns the segment");
    if (mode == 0 && len != n) return Bad("lossless segment: stored plane has the wrong size");
    // One current-format frame and nothing else: libzstd built with legacy support
    // would also decode v0.5-v0.7 frames (other magic numbers, older decoders) and
    // skippable or further frames; no kvhub encoder writes those.
    if (mode == 1 && !IsOneZstdFrame(seg + pos, len)) {
      return Bad("lossless segment: plane is not one zstd frame (format v1, magic 0xFD2FB528)");
    }
    if (mode == 1 && ZSTD_getFrameContentSize(seg + pos, len) != n) {
      return Bad("lossless segment: zstd frame has the wrong content size");
    }
    pos += len;
  }
  if (pos != size) return Bad("lossless segment: trailing bytes");
  return absl::OkStatus();
}

absl::Status DecodeLossless(const Kernels& K, const KvShape& sh, const uint8_t* seg,
                            uint64_t size, uint8_t* y) {
  if (absl::Status st = CheckLosslessSegment(sh, seg, size); !st.ok()) return st;
  Scratch& sc = TlsScratch();
  const size_t n = sh.SegmentElements();
  const size_t planes = DTypeBytes(sh.dtype);
  uint64_t pos = 4 + 8 * planes;
  for (size_t p = 0; p < planes; ++p) {
    // The table is read once more here, from memory the caller owns: a caller that
    // writes the block while it is decoded (Python threads share buffers with the
    // GIL released) could change it since CheckLosslessSegment. Each entry is read
    // once and its bounds checked again, so a change is an error, never a read past
    // the segment.
    const uint8_t* e = seg + 4 + 8 * p;
    const uint8_t mode = e[0];
    const uint32_t len = GetU32(e + 4);
    if (mode > 1 || len > size - pos || (mode == 0 && len != n) ||
        (mode == 1 && (len < 4 || GetU32(seg + pos) != ZSTD_MAGICNUMBER))) {
      return Bad("lossless segment: plane table changed while decoding");
    }
    uint8_t* dst = Grow(sc.plane[p], n);
    if (mode == 0) {
      std::memcpy(dst, seg + pos, n);
    } else {
      if (sc.dctx == nullptr) sc.dctx = ZSTD_createDCtx();
      if (sc.dctx == nullptr) return absl::ResourceExhaustedError("zstd: cannot create context");
      size_t r = ZSTD_decompressDCtx(sc.dctx, dst, n, seg + pos, len);
      if (ZSTD_isError(r) || r != n) {
        return Bad(absl::StrCat("lossless segment: zstd: ",
                                ZSTD_isError(r) ? ZSTD_getErrorName(r) : "short output"));
      }
    }
    pos += len;
  }
  if (planes == 2) {
    K.merge_planes16(sc.plane[0].data(), sc.plane[1].data(), n, reinterpret_cast<uint16_t*>(y));
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint32_t v = 0;
      for (size_t p = 0; p < 4; ++p) v |= static_cast<uint32_t>(sc.plane[p][i]) << (8 * (3 - p));
      v = (v >> 1) | (v << 31);
      std::memcpy(y + 4 * i, &v, 4);
    }
  }
  return absl::OkStatus();
}

void DecodeFp8(const Kernels& K, const KvShape& sh, bool is_value, uint32_t S, const uint8_t* seg,
               uint16_t* y) {
  const uint32_t T = sh.tokens, H = sh.kv_heads, D = sh.head_dim;
  const SegLayout L = Layout(CodecId::kFp8, sh, is_value, 0, S);
  const float* mid = is_value ? nullptr : LoadCentres(sh, seg + L.zero_off);
  for (uint32_t t = S; t < T; ++t) {
    for (uint32_t h = 0; h < H; ++h) {
      size_t row = (size_t{t} * H + h) * D;
      const float scale = GetF32(seg + L.scale_off + 4 * h);
      if (mid) {
        K.dequant_fp8_centered(seg + L.codes_off + row, mid + size_t{h} * D, D, scale, y + row);
      } else {
        K.dequant_fp8(seg + L.codes_off + row, D, scale, y + row);
      }
    }
  }
  std::memcpy(y, seg, L.sink_bytes);
}

void DecodeInt8(const Kernels& K, const KvShape& sh, bool is_value, uint32_t S, const uint8_t* seg,
                uint16_t* y) {
  const uint32_t T = sh.tokens, H = sh.kv_heads, D = sh.head_dim;
  const SegLayout L = Layout(CodecId::kInt8, sh, is_value, 0, S);
  const float* mid = is_value ? nullptr : LoadCentres(sh, seg + L.zero_off);
  for (size_t r = size_t{S} * H; r < size_t{T} * H; ++r) {
    const int8_t* q = reinterpret_cast<const int8_t*>(seg + L.codes_off + r * D);
    const float scale = GetF32(seg + L.scale_off + 4 * r);
    if (mid) {
      K.dequant_int8_centered(q, mid + (r % H) * D, D, scale, y + r * D);
    } else {
      K.dequant_int8(q, D, scale, y + r * D);
    }
  }
  std::memcpy(y, seg, L.sink_bytes);
}

void DecodeKivi(const Kernels& K, CodecId codec, const KvShape& sh, bool is_value, uint32_t G,
                uint32_t S, const uint8_t* seg, uint16_t* y) {
  const uint32_t T = sh.tokens, H = sh.kv_heads, D = sh.head_dim;
  const size_t n = sh.SegmentElements();
  const SegLayout L = Layout(codec, sh, is_value, G, S);
  Scratch& sc = TlsScratch();
  uint8_t* codes = Grow(sc.codes, n);
  if (codec == CodecId::kKivi4) {
    K.unpack4(seg + L.codes_off, n, codes);
  } else {
    K.unpack2(seg + L.codes_off, n, codes);
  }
  const uint16_t* sp = reinterpret_cast<const uint16_t*>(seg + L.scale_off);
  const uint16_t* zp = reinterpret_cast<const uint16_t*>(seg + L.zero_off);
  if (!is_value) {
    const size_t HD = size_t{H} * D;
    float* scale = Grow(sc.f0, HD);
    float* zero = Grow(sc.f1, HD);
    for (uint32_t t0 = 0, g = 0; t0 < T; t0 += G, ++g) {
      K.half_to_float(sp + size_t{g} * HD, HD, scale);
      K.half_to_float(zp + size_t{g} * HD, HD, zero);
      uint32_t t1 = std::min(T, t0 + G);
      for (uint32_t t = t0; t < t1; ++t) {
        for (uint32_t h = 0; h < H; ++h) {
          size_t row = (size_t{t} * H + h) * D;
          K.dequant_affine(codes + row, D, scale + size_t{h} * D, zero + size_t{h} * D, y + row);
        }
      }
    }
  } else {
    const uint32_t NG = (D + G - 1) / G;
    const size_t rows = size_t{T} * H;
    float* scale = Grow(sc.f0, rows * NG);
    float* zero = Grow(sc.f1, rows * NG);
    K.half_to_float(sp, rows * NG, scale);
    K.half_to_float(zp, rows * NG, zero);
    for (size_t r = size_t{S} * H; r < rows; ++r) {
      for (uint32_t j = 0; j < NG; ++j) {
        uint32_t c0 = j * G, len = std::min(D - c0, G);
        K.dequant_affine1(codes + r * D + c0, len, scale[r * NG + j], zero[r * NG + j],
                          y + r * D + c0);
      }
    }
  }
  std::memcpy(y, seg, L.sink_bytes);
}

}  // namespace

absl::Status CodecParams::Validate() const {
  if (!IsKnownCodec(static_cast<uint8_t>(codec))) {
    return absl::InvalidArgumentError("codec params: unknown codec");
  }
  if (IsKivi(codec) && group_size != 32 && group_size != 64 && group_size != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec params: group_size ", group_size, " must be 32, 64 or 128"));
  }
  if (sink_tokens > kMaxSinkTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec params: sink_tokens must be <= ", kMaxSinkTokens));
  }
  if (keys_pre_rope && codec == CodecId::kLossless) {
    return absl::InvalidArgumentError(
        "codec params: keys_pre_rope is not bit-exact and cannot be combined with lossless");
  }
  if (zstd_level < -7 || zstd_level > 19) {
    return absl::InvalidArgumentError("codec params: zstd_level must be in [-7, 19]");
  }
  if (kernels != KernelChoice::kSimd && kernels != KernelChoice::kScalar) {
    return absl::InvalidArgumentError("codec params: unknown kernel choice");
  }
  return absl::OkStatus();
}

namespace {
// The lossy codecs and pre-RoPE keys take bf16 only.
absl::Status CheckEncodableDtype(const CodecParams& p, DType dtype, absl::string_view caller) {
  const bool lossy = p.codec != CodecId::kRaw && p.codec != CodecId::kLossless;
  if ((lossy || p.keys_pre_rope) && dtype != DType::kBf16) {
    return absl::InvalidArgumentError(absl::StrCat(
        caller, ": codec ", CodecName(p.codec), p.keys_pre_rope ? " with keys_pre_rope" : "",
        " takes bf16 input; got ", DTypeName(dtype), " (use raw or lossless)"));
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<uint64_t> EncodedSize(const KvShape& sh, const CodecParams& p, uint32_t sinks) {
  if (auto s = sh.Validate(); !s.ok()) return s;
  if (auto s = p.Validate(); !s.ok()) return s;
  if (sinks > sh.tokens) {
    return absl::InvalidArgumentError(absl::StrCat("encoded size: ", sinks, " sink tokens in a block of ", sh.tokens));
  }
  if (p.codec == CodecId::kLossless) {
    return absl::InvalidArgumentError("lossless blocks have data-dependent sizes");
  }
  // No size for a block Encode refuses to make (it gave one for kivi4 of fp16 data,
  // for blocks past the format's limit, and for pre-RoPE keys of an odd head_dim).
  if (auto s = CheckEncodableDtype(p, sh.dtype, "encoded size"); !s.ok()) return s;
  if (sh.RawBytes() > BlockHeader::kMaxRawBytes) {
    return absl::InvalidArgumentError("encoded size: block larger than the format limit");
  }
  if (p.keys_pre_rope && sh.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("encoded size: keys_pre_rope needs an even head_dim (RoPE rotates pairs); got ", sh.head_dim));
  }
  uint64_t pos = 2ull * sh.layers * BlockHeader::kSegmentEntrySize;
  for (uint32_t s = 0; s < 2 * sh.layers; ++s) {
    pos = Align16(pos) + Layout(p.codec, sh, s % 2 == 1, p.group_size, sinks).size;
  }
  return BlockHeader::kSize + pos;
}

namespace {
// The kernels read and write 16-bit values through typed pointers: a buffer at an
// odd address (a Python memoryview sliced at byte 1, say) is copied first.
bool Misaligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % alignof(uint32_t) != 0; }
}  // namespace

absl::Status Encode(const KvView& kv, const CodecParams& p, std::vector<uint8_t>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("encode: out is null");
  const ScratchTrim trim;
  if (auto s = p.Validate(); !s.ok()) return s;
  if (auto s = kv.shape.Validate(); !s.ok()) return s;
  const KvShape& sh = kv.shape;
  if (kv.data == nullptr || kv.size != sh.RawBytes()) {
    return absl::InvalidArgumentError(absl::StrCat("encode: input is ", kv.size,
                                                   " bytes, shape needs ", sh.RawBytes()));
  }
  if (sh.RawBytes() > BlockHeader::kMaxRawBytes) {
    return absl::InvalidArgumentError("encode: block larger than the format limit");
  }
  if (p.codec == CodecId::kLossless && sh.SegmentElements() > std::numeric_limits<uint32_t>::max()) {
    // A plane's length is a u32 (docs/format.md): a stored plane of 2^32 bytes
    // would be written with length 0 and never decode.
    return absl::InvalidArgumentError(absl::StrCat(
        "encode: lossless planes hold at most 2^32-1 bytes; a segment of this shape has ", sh.SegmentElements(),
        " elements (fewer tokens per block, or another codec)"));
  }
  if (auto s = CheckPosition(kv.base_position, "encode: base_position"); !s.ok()) return s;
  if (auto s = CheckEncodableDtype(p, sh.dtype, "encode"); !s.ok()) return s;
  if (!std::isfinite(kv.rope_base) || kv.rope_base <= 0 ||
      (kv.rope_pairing != RopePairing::kNeox && kv.rope_pairing != RopePairing::kInterleaved)) {
    return absl::InvalidArgumentError("encode: bad rope_base or rope_pairing");
  }
  if (Misaligned(kv.data)) {  // valid input only: copied once, then encoded as is
    const std::vector<uint8_t> aligned(kv.data, kv.data + kv.size);
    KvView copy = kv;
    copy.data = aligned.data();
    return Encode(copy, p, out);
  }
  const Kernels& K = Pick(p.kernels);
  const uint8_t* data = kv.data;
  if (p.keys_pre_rope) {
    Scratch& sc = TlsScratch();
    uint8_t* copy = Grow(sc.input, kv.size);
    std::memcpy(copy, kv.data, kv.size);
    KvMutableView mv{sh, copy, kv.size};
    if (auto s = RotateAllKeys(mv, RopeParams{kv.rope_base, kv.rope_pairing}, -kv.base_position, -1);
        !s.ok()) {
      return s;
    }
    data = copy;
  }

  BlockHeader h;
  h.codec = p.codec;
  h.flags = p.keys_pre_rope ? kFlagKeysPreRope : 0;
  h.shape = sh;
  h.base_position = kv.base_position;
  h.rope_base = kv.rope_base;
  h.rope_pairing = kv.rope_pairing;
  h.fingerprint = kv.fingerprint;
  h.raw_bytes = sh.RawBytes();
  const uint32_t sinks = SinksInBlock(p, kv.base_position, sh.tokens);
  if (IsKivi(p.codec)) h.group_size = static_cast<uint16_t>(p.group_size);
  h.sink_tokens = static_cast<uint16_t>(sinks);  // 0 for raw and lossless

  const uint32_t nseg = 2 * sh.layers;
  const uint64_t seg_bytes = sh.SegmentBytes();
  if (p.codec != CodecId::kLossless) {
    auto total = EncodedSize(sh, p, sinks);
    if (!total.ok()) return total.status();
    out->resize(*total);
  } else {
    out->resize(BlockHeader::kSize + uint64_t{nseg} * BlockHeader::kSegmentEntrySize);
  }
  const size_t body = BlockHeader::kSize;
  uint64_t pos = uint64_t{nseg} * BlockHeader::kSegmentEntrySize;  // relative to body
  for (uint32_t s = 0; s < nseg; ++s) {
    const bool is_value = s % 2 == 1;
    const uint64_t off = Align16(pos);
    if (p.codec == CodecId::kLossless) out->resize(body + off);
    std::memset(out->data() + body + pos, 0, off - pos);
    const uint8_t* src = data + s * seg_bytes;
    const uint16_t* x = reinterpret_cast<const uint16_t*>(src);
    uint8_t* seg = out->data() + body + off;
    uint64_t size = Layout(p.codec, sh, is_value, p.group_size, sinks).size;
    absl::Status st;
    switch (p.codec) {
      case CodecId::kRaw: std::memcpy(seg, src, seg_bytes); break;
      case CodecId::kLossless:
        st = EncodeLossless(K, sh, src, p.zstd_level, out, body + off);
        size = out->size() - body - off;
        break;
      case CodecId::kFp8: st = EncodeFp8(K, sh, is_value, sinks, x, seg); break;
      case CodecId::kInt8: st = EncodeInt8(K, sh, is_value, sinks, x, seg); break;
      case CodecId::kKivi4:
      case CodecId::kKivi2:
        st = EncodeKivi(K, p.codec, sh, is_value, p.group_size, sinks, x, seg);
        break;
    }
    if (!st.ok()) return st;
    uint8_t* e = out->data() + body + uint64_t{s} * BlockHeader::kSegmentEntrySize;
    PutU64(e, off);
    PutU64(e + 8, size);
    pos = off + size;
  }
  if (body + pos != out->size()) {
    return absl::InternalError(absl::StrCat("encode: layout mismatch ", body + pos, " vs ",
                                            out->size()));
  }
  h.body_bytes = pos;
  h.body_checksum = Xxh3_64(out->data() + body, pos);
  h.Serialize(out->data());
  return absl::OkStatus();
}

absl::StatusOr<BlockHeader> InspectBlock(absl::Span<const uint8_t> block) {
  auto h = ParseHeader(block);
  if (!h.ok()) return h.status();
  // The structure too, so that a truncated or forged block (a 128-byte header
  // claiming 16 GiB) fails here, before a caller sizes a buffer from raw_bytes.
  // Without the body checksum (it is the decoder's to pay), except to name a
  // structure that fails: bytes changed since the block was made are DATA_LOSS, as
  // Decode reports them, not a malformed block.
  auto corrupt_or = [&](absl::Status bad) {
    if (block.size() == h->total_bytes() &&
        Xxh3_64(block.data() + BlockHeader::kSize, h->body_bytes) != h->body_checksum) {
      return absl::DataLossError("kv block: body checksum mismatch");
    }
    return bad;
  };
  auto segs = ParseBlock(block, *h, /*verify_checksum=*/false);
  if (!segs.ok()) return corrupt_or(segs.status());
  for (uint32_t s = 0; s < h->segment_count(); ++s) {
    const uint64_t size = (*segs)[s].size;
    if (h->codec == CodecId::kLossless) {
      const uint8_t* seg = block.data() + BlockHeader::kSize + (*segs)[s].offset;
      if (absl::Status st = CheckLosslessSegment(h->shape, seg, size); !st.ok()) return corrupt_or(st);
      continue;
    }
    const uint64_t want = Layout(h->codec, h->shape, s % 2 == 1, h->group_size, h->sink_tokens).size;
    if (size != want) {
      return corrupt_or(
          Bad(absl::StrCat("segment ", s, " is ", size, " bytes, ", CodecName(h->codec), " needs ", want)));
    }
  }
  return h;
}

absl::Status Decode(absl::Span<const uint8_t> block, const KvMutableView& out,
                    const DecodeOptions& opt, BlockHeader* header) {
  const ScratchTrim trim;
  auto h = ParseHeader(block);
  if (!h.ok()) return h.status();
  auto segs = ParseBlock(block, *h, opt.verify_checksum);
  if (!segs.ok()) return segs.status();
  const KvShape& sh = h->shape;
  if (!(out.shape == sh)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode: output shape ", out.shape.layers, "x", out.shape.kv_heads, "x", out.shape.head_dim,
        "x", out.shape.tokens, " ", DTypeName(out.shape.dtype), " != block shape ", sh.layers, "x",
        sh.kv_heads, "x", sh.head_dim, "x", sh.tokens, " ", DTypeName(sh.dtype)));
  }
  if (out.data == nullptr || out.size != sh.RawBytes()) {
    return absl::InvalidArgumentError("decode: output buffer size does not match the shape");
  }
  if (opt.target_position.has_value()) {
    if (auto s = CheckPosition(*opt.target_position, "decode: target_position"); !s.ok()) return s;
  }
  // Valid blocks and buffers only: copied once, then decoded as is (the copy is
  // checksummed again: the caller's buffer may change under a decode).
  if (Misaligned(block.data())) {
    const std::vector<uint8_t> aligned(block.begin(), block.end());
    return Decode(absl::Span<const uint8_t>(aligned), out, opt, header);
  }
  if (Misaligned(out.data)) {
    std::vector<uint8_t> aligned(out.size);
    KvMutableView into = out;
    into.data = aligned.data();
    absl::Status s = Decode(block, into, opt, header);
    if (s.ok()) std::memcpy(out.data, aligned.data(), out.size);
    return s;
  }
  const Kernels& K = Pick(opt.kernels);
  const uint8_t* body = block.data() + BlockHeader::kSize;
  for (uint32_t s = 0; s < h->segment_count(); ++s) {
    const bool is_value = s % 2 == 1;
    const uint8_t* seg = body + (*segs)[s].offset;
    const uint64_t size = (*segs)[s].size;
    uint8_t* y = out.Segment(s);
    if (h->codec == CodecId::kLossless) {
      if (auto st = DecodeLossless(K, sh, seg, size, y); !st.ok()) return st;
      continue;
    }
    const uint64_t want = Layout(h->codec, sh, is_value, h->group_size, h->sink_tokens).size;
    if (size != want) {
      return Bad(absl::StrCat("segment ", s, " is ", size, " bytes, ", CodecName(h->codec),
                              " needs ", want));
    }
    // Scales, centres and zeros are used as stored: a NaN, inf or negative one
    // (a resealed or badly encoded block) would decode to NaN/inf. DATA_LOSS.
    if (auto st = CheckSegmentStats(*h, s, seg); !st.ok()) return st;
    uint16_t* y16 = reinterpret_cast<uint16_t*>(y);
    switch (h->codec) {
      case CodecId::kRaw: std::memcpy(y, seg, size); break;
      case CodecId::kFp8: DecodeFp8(K, sh, is_value, h->sink_tokens, seg, y16); break;
      case CodecId::kInt8: DecodeInt8(K, sh, is_value, h->sink_tokens, seg, y16); break;
      case CodecId::kKivi4:
      case CodecId::kKivi2:
        DecodeKivi(K, h->codec, sh, is_value, h->group_size, h->sink_tokens, seg, y16);
        break;
      case CodecId::kLossless: break;
    }
  }
  const RopeParams rope{h->rope_base, h->rope_pairing};
  const int64_t target = opt.target_position.value_or(h->base_position);
  if (h->keys_pre_rope()) {
    if (auto s = RotateAllKeys(out, rope, target, 1); !s.ok()) return s;
  } else if (target != h->base_position) {
    int64_t delta;
    if (__builtin_sub_overflow(target, h->base_position, &delta)) {
      return absl::InvalidArgumentError("decode: position delta overflows");
    }
    if (auto s = RotateAllKeys(out, rope, delta, 0); !s.ok()) return s;
  }
  if (header != nullptr) *header = *h;
  return absl::OkStatus();
}

}  // namespace kvhub::codec
