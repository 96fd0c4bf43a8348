#include "common/keys.h"

#include <bit>

#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "common/utf8.h"

namespace kvhub {
namespace {
static_assert(std::endian::native == std::endian::little,
              "keys hash tokens as i32le; add a byte swap for big-endian hosts");

void UpdateTokens(Xxh3_128Stream& h, std::span<const int32_t> tokens) {
  h.Update(tokens.data(), tokens.size_bytes());
}
}  // namespace

absl::Status ValidateNamespace(absl::string_view ns) {
  if (ns.empty()) return absl::InvalidArgumentError("namespace is empty");
  if (ns.size() > kMaxNamespaceBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("namespace is ", ns.size(), " bytes, limit ", kMaxNamespaceBytes));
  }
  for (unsigned char c : ns) {
    if (c < 0x20 || c == 0x7f) return absl::InvalidArgumentError("namespace holds a control byte");
  }
  if (!IsUtf8(ns)) {
    return absl::InvalidArgumentError("namespace is not valid UTF-8 (the API carries it as a protobuf string)");
  }
  return absl::OkStatus();
}

U128 ChainRoot(absl::string_view ns, const U128& fingerprint) {
  Xxh3_128Stream h;
  h.Update("kvhub.v1");
  h.UpdateU32Le(static_cast<uint32_t>(ns.size()));
  h.Update(ns);
  h.UpdateU128(fingerprint);
  return h.Digest();
}

BlockKey NextBlockKey(const U128& prev, std::span<const int32_t> block_tokens) {
  Xxh3_128Stream h;
  h.UpdateU128(prev);
  UpdateTokens(h, block_tokens);
  return h.Digest();
}

void AppendBlockKeys(absl::string_view ns, const U128& fingerprint, uint32_t block_tokens,
                     std::span<const int32_t> tokens, std::vector<BlockKey>* out) {
  if (block_tokens == 0) return;
  U128 prev = ChainRoot(ns, fingerprint);
  const size_t n = tokens.size() / block_tokens;
  out->reserve(out->size() + n);
  for (size_t i = 0; i < n; ++i) {
    prev = NextBlockKey(prev, tokens.subspan(i * block_tokens, block_tokens));
    out->push_back(prev);
  }
}

std::vector<BlockKey> BlockKeys(absl::string_view ns, const ModelSpec& spec,
                                std::span<const int32_t> tokens) {
  std::vector<BlockKey> keys;
  AppendBlockKeys(ns, spec.Fingerprint(), spec.block_tokens, tokens, &keys);
  return keys;
}

BlockKey ChunkKey(absl::string_view ns, const U128& fingerprint, std::span<const int32_t> tokens) {
  Xxh3_128Stream h;
  h.Update("kvhub.chunk.v1");
  h.UpdateU32Le(static_cast<uint32_t>(ns.size()));
  h.Update(ns);
  h.UpdateU128(fingerprint);
  UpdateTokens(h, tokens);
  return h.Digest();
}

}  // namespace kvhub
