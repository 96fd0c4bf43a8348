// A prefill-then-decode round trip through an installed kvhub, as a serving engine
// would write it: encode each block's K/V with a codec, publish the blocks, look up
// the cached prefix, fetch it into the engine's buffers, decode, compare.
//
//   consumer HOST:PORT
// Prints "consumer ok: ..." and exits 0 when every byte came back; 1 otherwise.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <vector>

#include "client/client.h"
#include "codec/codec.h"

namespace {

int Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "consumer: %s: %s\n", what, status.ToString().c_str());
  return 1;
}

// bf16 of a float by truncation: the test only needs distinct, finite values.
uint16_t Bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer HOST:PORT\n");
    return 2;
  }
  kvhub::ClientConfig config;
  auto members = kvhub::ClientConfig::ParseMembers(argv[1]);
  if (!members.ok()) return Fail("members", members.status());
  config.members = *members;
  auto client = kvhub::Client::Create(config);
  if (!client.ok()) return Fail("Client::Create", client.status());
  auto spec = kvhub::ModelSpec::Parse(
      "model=install-consumer,layers=2,kv_heads=2,head_dim=64,dtype=bf16,rope_base=10000,block_tokens=16");
  if (!spec.ok()) return Fail("ModelSpec::Parse", spec.status());

  constexpr uint32_t kBlocks = 4;
  const uint32_t block_tokens = spec->block_tokens;
  std::vector<int32_t> tokens(kBlocks * block_tokens);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(1000 + 7 * i);

  // One lossless block per 16 tokens (bit-exact, so the decode can be compared byte for byte).
  kvhub::codec::KvShape shape;
  shape.layers = spec->layers;
  shape.kv_heads = spec->kv_heads;
  shape.head_dim = spec->head_dim;
  shape.tokens = block_tokens;
  std::vector<std::vector<uint8_t>> raw(kBlocks), encoded(kBlocks);
  std::vector<std::span<const uint8_t>> payloads;
  for (uint32_t b = 0; b < kBlocks; ++b) {
    raw[b].resize(shape.RawBytes());
    for (size_t i = 0; i + 1 < raw[b].size(); i += 2) {
      uint16_t v = Bf16(std::sin(0.001f * static_cast<float>(i) + static_cast<float>(b)));
      std::memcpy(&raw[b][i], &v, sizeof(v));
    }
    kvhub::codec::KvView view;
    view.shape = shape;
    view.data = raw[b].data();
    view.size = raw[b].size();
    view.base_position = static_cast<int64_t>(b) * block_tokens;
    view.rope_base = spec->rope_base;
    view.fingerprint = spec->Fingerprint();
    kvhub::codec::CodecParams params;
    params.codec = kvhub::codec::CodecId::kLossless;
    if (absl::Status s = kvhub::codec::Encode(view, params, &encoded[b]); !s.ok()) return Fail("Encode", s);
    payloads.emplace_back(encoded[b]);
  }

  auto published = (*client)->Publish("consumer", *spec, tokens, payloads);
  if (!published.ok()) return Fail("Publish", published.status());
  auto hit = (*client)->LookupPrefix("consumer", *spec, tokens);
  if (!hit.ok()) return Fail("LookupPrefix", hit.status());
  if (hit->hit_blocks != kBlocks) {
    std::fprintf(stderr, "consumer: %zu of %u blocks cached after publishing them\n", hit->hit_blocks, kBlocks);
    return 1;
  }
  std::vector<std::vector<uint8_t>> buffers(kBlocks);
  std::vector<std::span<uint8_t>> spans;
  for (uint32_t b = 0; b < kBlocks; ++b) {
    buffers[b].resize(encoded[b].size());
    spans.emplace_back(buffers[b]);
  }
  auto fetched = (*client)->Fetch("consumer", *spec, tokens, kBlocks, spans);
  if (!fetched.ok()) return Fail("Fetch", fetched.status());
  if (fetched->valid_blocks != kBlocks) {
    std::fprintf(stderr, "consumer: %zu of %u blocks fetched and verified\n", fetched->valid_blocks, kBlocks);
    return 1;
  }
  for (uint32_t b = 0; b < kBlocks; ++b) {
    std::vector<uint8_t> decoded(shape.RawBytes());
    kvhub::codec::KvMutableView out;
    out.shape = shape;
    out.data = decoded.data();
    out.size = decoded.size();
    if (absl::Status s = kvhub::codec::Decode(buffers[b], out); !s.ok()) return Fail("Decode", s);
    if (decoded != raw[b]) {
      std::fprintf(stderr, "consumer: block %u decoded to different bytes\n", b);
      return 1;
    }
  }
  std::printf("consumer ok: published %zu stored %zu, hit %zu blocks (%llu tokens), fetched and decoded %zu\n",
              published->stored + published->skipped, published->stored, hit->hit_blocks,
              static_cast<unsigned long long>(hit->hit_tokens), fetched->valid_blocks);
  return 0;
}
