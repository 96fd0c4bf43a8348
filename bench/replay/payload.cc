#include "bench/replay/payload.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/codec.h"
#include "codec/synthetic_kv.h"
#include "common/hash.h"

namespace kvhub::replay {
namespace {

// head_dim: the largest of 128, 64, 32, 16 that bytes_per_token allows.
uint32_t HeadDimFor(uint64_t bytes_per_token) {
  for (uint32_t d : {128u, 64u, 32u}) {
    if (bytes_per_token % (4 * d) == 0) return d;
  }
  return 16;
}
constexpr double kRopeBase = 500000.0;

absl::Status EncodeTemplate(const PayloadConfig& c, const ModelSpec& spec, int64_t base_position,
                            std::vector<uint8_t>* out, codec::BlockHeader* header) {
  codec::SyntheticKvConfig g;
  g.layers = spec.layers;
  g.kv_heads = spec.kv_heads;
  g.head_dim = spec.head_dim;
  g.tokens = c.block_tokens;
  g.base_position = base_position;
  g.rope_base = kRopeBase;
  g.seed = c.seed;
  absl::StatusOr<codec::SyntheticKv> kv = codec::GenerateSyntheticKv(g);
  if (!kv.ok()) return kv.status();
  codec::KvView view = kv->View(kRopeBase, RopePairing::kNeox);
  view.base_position = base_position;
  view.fingerprint = spec.Fingerprint();
  absl::StatusOr<codec::CodecId> id = codec::ParseCodecName(c.codec);
  if (!id.ok()) return id.status();
  codec::CodecParams params;
  params.codec = *id;
  if (absl::Status s = codec::Encode(view, params, out); !s.ok()) return s;
  absl::StatusOr<codec::BlockHeader> h = codec::InspectBlock(*out);
  if (!h.ok()) return h.status();
  *header = *h;
  if (out->size() < codec::BlockHeader::kSize + header->table_bytes() + 16) {
    return absl::InvalidArgumentError("payload too small to stamp a key into");
  }
  return absl::OkStatus();
}

void Stamp(const std::vector<uint8_t>& tmpl, codec::BlockHeader header, const BlockKey& key,
           uint64_t index, uint32_t block_tokens, std::vector<uint8_t>* out) {
  out->assign(tmpl.begin(), tmpl.end());
  uint8_t* p = out->data() + out->size() - 16;
  codec::PutU64(p, key.lo);
  codec::PutU64(p + 8, key.hi);
  header.base_position = static_cast<int64_t>(index * block_tokens);
  header.body_checksum = Xxh3_64(out->data() + codec::BlockHeader::kSize,
                                 out->size() - codec::BlockHeader::kSize);
  header.Serialize(out->data());
}

}  // namespace

absl::Status PayloadConfig::Validate() const {
  if (codec != "raw" && codec != "fp8" && codec != "int8" && codec != "kivi4" && codec != "kivi2") {
    return absl::InvalidArgumentError(
        absl::StrCat("codec must be raw, fp8, int8, kivi4 or kivi2, got \"", codec, "\""));
  }
  if (bytes_per_token == 0 || bytes_per_token % 64 != 0 ||
      bytes_per_token / (4 * HeadDimFor(bytes_per_token)) > 1024 * 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bytes_per_token must be a positive multiple of 64 up to 4 MiB, got ", bytes_per_token));
  }
  if (block_tokens == 0 || block_tokens > 65536) {
    return absl::InvalidArgumentError("block_tokens must be in [1, 65536]");
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelSpec> ReplayModelSpec(const PayloadConfig& c) {
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  const uint32_t head_dim = HeadDimFor(c.bytes_per_token);
  const uint64_t units = c.bytes_per_token / (4 * head_dim);  // kv_heads * layers
  uint32_t heads = 1;
  for (uint32_t h : {8u, 4u, 2u}) {
    if (units % h == 0 && units / h >= h) {
      heads = h;
      break;
    }
  }
  ModelSpec spec;
  spec.model = "kvhub-replay-synthetic";
  spec.layers = static_cast<uint32_t>(units / heads);
  spec.kv_heads = heads;
  spec.head_dim = head_dim;
  spec.dtype = DType::kBf16;
  spec.rope_base = kRopeBase;
  spec.block_tokens = c.block_tokens;
  if (absl::Status s = spec.Validate(); !s.ok()) return s;
  return spec;
}

absl::StatusOr<std::unique_ptr<PayloadFactory>> PayloadFactory::Create(const PayloadConfig& c) {
  absl::StatusOr<ModelSpec> spec = ReplayModelSpec(c);
  if (!spec.ok()) return spec.status();
  std::unique_ptr<PayloadFactory> f(new PayloadFactory());
  f->spec_ = *spec;
  f->config_ = c;
  if (absl::Status s = EncodeTemplate(c, *spec, 0, &f->first_, &f->first_header_); !s.ok()) return s;
  if (absl::Status s = EncodeTemplate(c, *spec, c.block_tokens, &f->later_, &f->later_header_);
      !s.ok()) {
    return s;
  }
  return f;
}

void PayloadFactory::Make(const BlockKey& key, uint64_t index, std::vector<uint8_t>* out) const {
  if (index == 0) {
    Stamp(first_, first_header_, key, index, config_.block_tokens, out);
  } else {
    Stamp(later_, later_header_, key, index, config_.block_tokens, out);
  }
}

bool PayloadFactory::Verify(const BlockKey& key, uint64_t index, std::span<const uint8_t> bytes,
                            std::vector<uint8_t>* scratch) const {
  Make(key, index, scratch);
  return bytes.size() == scratch->size() &&
         std::memcmp(bytes.data(), scratch->data(), bytes.size()) == 0;
}

}  // namespace kvhub::replay
