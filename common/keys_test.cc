#include "common/keys.h"

#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/model_spec.h"

namespace kvhub {
namespace {

nlohmann::json LoadVectors() {
  const char* src = std::getenv("KVHUB_SOURCE_DIR");
  std::string path = std::string(src ? src : ".") + "/tests/vectors/block_keys.json";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return nlohmann::json::parse(in);
}

ModelSpec SpecFromJson(const nlohmann::json& j) {
  ModelSpec s;
  s.model = j["model"];
  s.layers = j["layers"];
  s.kv_heads = j["kv_heads"];
  s.head_dim = j["head_dim"];
  s.dtype = *ParseDType(j["dtype"].get<std::string>());
  s.rope_base = j["rope_base"];
  s.rope_pairing = *ParseRopePairing(j["rope_pairing"].get<std::string>());
  s.tp_rank = j["tp_rank"];
  s.tp_world = j["tp_world"];
  s.block_tokens = j["block_tokens"];
  return s;
}

TEST(KeysTest, FingerprintsMatchVectors) {
  auto vec = LoadVectors();
  ASSERT_GE(vec["specs"].size(), 4u);
  for (const auto& s : vec["specs"]) {
    ModelSpec spec = SpecFromJson(s["spec"]);
    ASSERT_TRUE(spec.Validate().ok()) << spec.Validate();
    EXPECT_EQ(spec.CanonicalText(), s["canonical"].get<std::string>());
    EXPECT_EQ(spec.Fingerprint().Hex(), s["fingerprint"].get<std::string>());
  }
}

TEST(KeysTest, BlockAndChunkKeysMatchVectors) {
  auto vec = LoadVectors();
  size_t cases = 0, zero_len = 0, partial = 0;
  for (const auto& c : vec["cases"]) {
    ModelSpec spec = SpecFromJson(c["spec"]);
    std::vector<int32_t> tokens = c["tokens"].get<std::vector<int32_t>>();
    std::string ns = c["namespace"];
    std::vector<BlockKey> keys = BlockKeys(ns, spec, tokens);
    ASSERT_EQ(keys.size(), c["block_keys"].size());
    for (size_t i = 0; i < keys.size(); ++i) {
      EXPECT_EQ(keys[i].Hex(), c["block_keys"][i].get<std::string>()) << "case " << cases << " block " << i;
    }
    EXPECT_EQ(ChunkKey(ns, spec.Fingerprint(), tokens).Hex(), c["chunk_key"].get<std::string>());
    ++cases;
    zero_len += tokens.empty();
    partial += tokens.size() % spec.block_tokens != 0;
  }
  EXPECT_GT(cases, 50u);
  EXPECT_GT(zero_len, 0u);
  EXPECT_GT(partial, 0u);
}

TEST(KeysTest, PrefixSharingAndIsolation) {
  ModelSpec spec = *ModelSpec::Parse("model=m,layers=2,kv_heads=2,head_dim=64,block_tokens=4");
  std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<int32_t> b = {1, 2, 3, 4, 5, 6, 7, 0};
  auto ka = BlockKeys("t1", spec, a), kb = BlockKeys("t1", spec, b), kc = BlockKeys("t2", spec, a);
  ASSERT_EQ(ka.size(), 2u);
  ASSERT_EQ(kb.size(), 2u);
  EXPECT_EQ(ka[0], kb[0]);      // shared first block
  EXPECT_NE(ka[1], kb[1]);      // diverging second block
  EXPECT_NE(ka[0], kc[0]);      // another namespace never shares
  ModelSpec other = spec;
  other.tp_rank = 0;
  other.tp_world = 2;
  EXPECT_NE(BlockKeys("t1", other, a)[0], ka[0]);  // any spec field changes every key
}

TEST(KeysTest, U128RoundTripAndErrors) {
  U128 v{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  EXPECT_EQ(v.Hex(), "efcdab89674523011032547698badcfe");
  EXPECT_EQ(*U128::FromHex(v.Hex()), v);
  EXPECT_EQ(*U128::FromHex("EFCDAB89674523011032547698BADCFE"), v);
  EXPECT_FALSE(U128::FromHex("abc").ok());
  EXPECT_FALSE(U128::FromHex(std::string(31, '0') + "g").ok());
  EXPECT_FALSE(U128::FromBytes(absl::string_view("short")).ok());
}

TEST(KeysTest, NamespaceValidation) {
  EXPECT_TRUE(ValidateNamespace("tenant-a").ok());
  EXPECT_FALSE(ValidateNamespace("").ok());
  EXPECT_FALSE(ValidateNamespace(std::string(kMaxNamespaceBytes + 1, 'x')).ok());
  EXPECT_FALSE(ValidateNamespace(std::string("a\0b", 3)).ok());
  // UTF-8: multi-byte characters pass; what protobuf would refuse on the wire does
  // not (before, a shard answered such a call UNIMPLEMENTED with no message).
  EXPECT_TRUE(ValidateNamespace("\xE5\x90\x8D\xE5\x89\x8D caf\xC3\xA9 \xF0\x9F\x98\x80").ok());
  for (const char* bad : {"bad\xFF", "\xC3", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                          "\xF8\x88\x80\x80\x80", "x\x80y"}) {
    absl::Status s = ValidateNamespace(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("UTF-8"), absl::string_view::npos) << s.message();
  }
}

}  // namespace
}  // namespace kvhub
