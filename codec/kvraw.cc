#include "codec/kvraw.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/block_format.h"
#include "codec/rope.h"
#include "common/input_file.h"
#include "common/output_file.h"

namespace kvhub::codec {
namespace {
constexpr uint32_t kRawMagic = 0x5752564B;  // "KVRW"
constexpr uint32_t kQMagic = 0x5152564B;    // "KVRQ"
constexpr size_t kRawHeader = 64;
constexpr size_t kQHeader = 32;
}  // namespace

KvView KvRaw::View() const {
  KvView v;
  v.shape = shape;
  v.data = data.data();
  v.size = data.size();
  v.base_position = base_position;
  v.rope_base = rope_base;
  v.rope_pairing = rope_pairing;
  return v;
}

std::vector<uint8_t> SerializeKvRaw(const KvRaw& kv) {
  std::vector<uint8_t> out(kRawHeader + kv.data.size(), 0);
  uint8_t* p = out.data();
  PutU32(p, kRawMagic);
  PutU32(p + 4, 1);
  PutU32(p + 8, kv.shape.layers);
  PutU32(p + 12, kv.shape.kv_heads);
  PutU32(p + 16, kv.shape.head_dim);
  PutU32(p + 20, kv.shape.tokens);
  p[24] = static_cast<uint8_t>(kv.shape.dtype);
  p[25] = static_cast<uint8_t>(kv.rope_pairing);
  PutU64(p + 32, std::bit_cast<uint64_t>(kv.rope_base));
  PutU64(p + 40, static_cast<uint64_t>(kv.base_position));
  if (!kv.data.empty()) std::memcpy(p + kRawHeader, kv.data.data(), kv.data.size());
  return out;
}

absl::StatusOr<KvRaw> ParseKvRaw(const std::vector<uint8_t>& b) {
  if (b.size() < kRawHeader) return absl::InvalidArgumentError("kvraw: file shorter than header");
  const uint8_t* p = b.data();
  if (GetU32(p) != kRawMagic) return absl::InvalidArgumentError("kvraw: bad magic");
  if (GetU32(p + 4) != 1) return absl::InvalidArgumentError("kvraw: unsupported version");
  KvRaw kv;
  kv.shape.layers = GetU32(p + 8);
  kv.shape.kv_heads = GetU32(p + 12);
  kv.shape.head_dim = GetU32(p + 16);
  kv.shape.tokens = GetU32(p + 20);
  if (p[24] < 1 || p[24] > 3) return absl::InvalidArgumentError("kvraw: bad dtype");
  kv.shape.dtype = static_cast<DType>(p[24]);
  if (p[25] < 1 || p[25] > 2) return absl::InvalidArgumentError("kvraw: bad rope pairing");
  kv.rope_pairing = static_cast<RopePairing>(p[25]);
  kv.rope_base = std::bit_cast<double>(GetU64(p + 32));
  kv.base_position = static_cast<int64_t>(GetU64(p + 40));
  for (size_t i : {26, 27, 28, 29, 30, 31}) {
    if (p[i] != 0) return absl::InvalidArgumentError(absl::StrCat("kvraw: header byte ", i, " must be 0"));
  }
  for (size_t i = 48; i < kRawHeader; ++i) {
    if (p[i] != 0) return absl::InvalidArgumentError(absl::StrCat("kvraw: header byte ", i, " must be 0"));
  }
  if (auto s = CheckPosition(kv.base_position, "kvraw: base_position"); !s.ok()) return s;
  if (auto s = kv.shape.Validate(); !s.ok()) return s;
  if (!std::isfinite(kv.rope_base) || kv.rope_base <= 0) {
    return absl::InvalidArgumentError("kvraw: rope_base must be finite and > 0");
  }
  if (b.size() - kRawHeader != kv.shape.RawBytes()) {
    return absl::InvalidArgumentError(absl::StrCat("kvraw: data is ", b.size() - kRawHeader,
                                                   " bytes, header says ", kv.shape.RawBytes()));
  }
  kv.data.assign(b.begin() + kRawHeader, b.end());
  return kv;
}

std::vector<uint8_t> SerializeQueries(const KvShape& sh, const Queries& q) {
  std::vector<uint8_t> out(kQHeader + q.data.size() * 4, 0);
  PutU32(out.data(), kQMagic);
  PutU32(out.data() + 4, 1);
  PutU32(out.data() + 8, sh.layers);
  PutU32(out.data() + 12, sh.kv_heads);
  PutU32(out.data() + 16, q.per_kv_head);
  PutU32(out.data() + 20, sh.head_dim);
  std::memcpy(out.data() + kQHeader, q.data.data(), q.data.size() * 4);
  return out;
}

absl::StatusOr<Queries> ParseQueries(const KvShape& sh, const std::vector<uint8_t>& b) {
  if (b.size() < kQHeader || GetU32(b.data()) != kQMagic || GetU32(b.data() + 4) != 1) {
    return absl::InvalidArgumentError("kvq: bad header");
  }
  for (size_t i = 24; i < kQHeader; ++i) {
    if (b[i] != 0) return absl::InvalidArgumentError(absl::StrCat("kvq: header byte ", i, " must be 0"));
  }
  Queries q;
  q.per_kv_head = GetU32(b.data() + 16);
  if (GetU32(b.data() + 8) != sh.layers || GetU32(b.data() + 12) != sh.kv_heads ||
      GetU32(b.data() + 20) != sh.head_dim || q.per_kv_head == 0 || q.per_kv_head > 65536) {
    return absl::InvalidArgumentError("kvq: shape does not match the kvraw file");
  }
  uint64_t n = uint64_t{sh.layers} * sh.kv_heads * q.per_kv_head * sh.head_dim;
  if (b.size() - kQHeader != n * 4) return absl::InvalidArgumentError("kvq: wrong data size");
  q.data.resize(n);
  std::memcpy(q.data.data(), b.data() + kQHeader, n * 4);
  return q;
}

absl::StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path) {
  absl::StatusOr<std::string> text = ReadInput(path);
  if (!text.ok()) return text.status();
  return std::vector<uint8_t>(text->begin(), text->end());
}

absl::Status WriteFileBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  return WriteOutput(path, absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace kvhub::codec
