#include "cachesvc/request_validation.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvhub::cachesvc {
namespace {

using ::testing::HasSubstr;

std::string Keys(size_t n) { return std::string(n * 16, 'k'); }

void ExpectInvalid(const absl::Status& s, const char* field) {
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr(field)) << s;
}

TEST(RequestValidationTest, Namespace) {
  EXPECT_TRUE(ValidateNamespaceField("tenant-a").ok());
  EXPECT_TRUE(ValidateNamespaceField(std::string(256, 'n')).ok());
  ExpectInvalid(ValidateNamespaceField(""), "namespace");
  ExpectInvalid(ValidateNamespaceField(std::string(257, 'n')), "namespace");
  ExpectInvalid(ValidateNamespaceField(std::string(300, 'n')), "namespace");
  ExpectInvalid(ValidateNamespaceField(std::string("a\nb")), "namespace");
  ExpectInvalid(ValidateNamespaceField(std::string("a\0b", 3)), "namespace");
}

TEST(RequestValidationTest, PackedKeys) {
  EXPECT_EQ(*ValidatePackedKeys("keys", Keys(1)), 1u);
  EXPECT_EQ(*ValidatePackedKeys("keys", Keys(4096)), 4096u);
  ExpectInvalid(ValidatePackedKeys("keys", "").status(), "keys");
  ExpectInvalid(ValidatePackedKeys("keys", std::string(17, 'k')).status(), "multiple of 16");
  ExpectInvalid(ValidatePackedKeys("keys", Keys(5000)).status(), "5000 keys");
}

TEST(RequestValidationTest, PackedKeyDecodesCanonicalBytes) {
  BlockKey k{0x0123456789abcdefull, 0xfedcba9876543210ull};
  auto bytes = k.Bytes();
  std::string packed = std::string(16, '\0') + std::string(bytes.begin(), bytes.end());
  EXPECT_EQ(PackedKey(packed, 1), k);
}

TEST(RequestValidationTest, Lookup) {
  v1::LookupRequest r;
  r.set_namespace_("ns");
  r.set_keys(Keys(256));
  r.set_block_tokens(256);
  r.set_model("llama");
  EXPECT_TRUE(ValidateLookup(r).ok());
  r.set_model(std::string(300, 'm'));
  ExpectInvalid(ValidateLookup(r), "model");
  r.set_model("m");
  r.set_block_tokens(kMaxBlockTokens + 1);
  ExpectInvalid(ValidateLookup(r), "block_tokens");
  r.set_block_tokens(16);
  r.set_keys(Keys(4097));
  ExpectInvalid(ValidateLookup(r), "keys");
  r.set_keys(Keys(1));
  r.set_namespace_("");
  ExpectInvalid(ValidateLookup(r), "namespace");
}

TEST(RequestValidationTest, PutStartItems) {
  v1::PutStartRequest r;
  r.set_namespace_("ns");
  ExpectInvalid(ValidatePutStart(r, 1 << 20), "items");  // no items
  v1::PutItem* it = r.add_items();
  it->set_key(Keys(1));
  it->set_size(1000);
  EXPECT_TRUE(ValidatePutStart(r, 1 << 20).ok());
  it->set_parent(Keys(1));
  EXPECT_TRUE(ValidatePutStart(r, 1 << 20).ok());
  it->set_parent("short");
  ExpectInvalid(ValidatePutStart(r, 1 << 20), "items[0].parent");
  it->clear_parent();
  it->set_key(std::string(15, 'k'));
  ExpectInvalid(ValidatePutStart(r, 1 << 20), "items[0].key");
  it->set_key(Keys(1));
  it->set_size(0);
  ExpectInvalid(ValidatePutStart(r, 1 << 20), "items[0].size");
  it->set_size((1 << 20) + 1);
  ExpectInvalid(ValidatePutStart(r, 1 << 20), "exceeds the largest block");
  it->set_size(10);
  it->set_data("x");
  ExpectInvalid(ValidatePutStart(r, 1 << 20), "items[0].data");
  it->clear_data();
  for (int i = 0; i < 4096; ++i) *r.add_items() = *it;
  ExpectInvalid(ValidatePutStart(r, 1 << 20), "4097 items");
}

TEST(RequestValidationTest, PutInline) {
  v1::PutRequest r;
  r.set_namespace_("ns");
  v1::PutItem* it = r.add_items();
  it->set_key(Keys(1));
  it->set_data(std::string(100, 'd'));
  EXPECT_TRUE(ValidatePut(r, 1 << 20).ok());
  it->set_size(100);
  EXPECT_TRUE(ValidatePut(r, 1 << 20).ok());
  it->set_size(99);
  ExpectInvalid(ValidatePut(r, 1 << 20), "items[0].size");
  it->set_size(0);
  it->clear_data();
  ExpectInvalid(ValidatePut(r, 1 << 20), "items[0].data");
  it->set_data(std::string(2000, 'd'));
  ExpectInvalid(ValidatePut(r, 1000), "exceeds the largest block");
}

TEST(RequestValidationTest, GetAndIds) {
  v1::GetRequest g;
  g.set_namespace_("ns");
  g.set_keys(Keys(3));
  g.set_lease_ms(600000);
  EXPECT_TRUE(ValidateGet(g).ok());
  g.set_lease_ms(600001);
  ExpectInvalid(ValidateGet(g), "lease_ms");

  google::protobuf::RepeatedField<uint64_t> ids;
  ExpectInvalid(ValidateIds("lease_ids", ids), "lease_ids");
  ids.Add(7);
  EXPECT_TRUE(ValidateIds("lease_ids", ids).ok());
  ids.Add(0);
  ExpectInvalid(ValidateIds("lease_ids", ids), "lease_ids[1]");

  v1::PutDataChunk c;
  ExpectInvalid(ValidatePutDataChunk(c), "reservation_id");
  c.set_reservation_id(5);
  EXPECT_TRUE(ValidatePutDataChunk(c).ok());
}

}  // namespace
}  // namespace kvhub::cachesvc
