#include "common/model_spec.h"

#include <gtest/gtest.h>

namespace kvhub {
namespace {

TEST(ModelSpecTest, ParseAndCanonical) {
  auto spec = ModelSpec::Parse(
      "model=llama3-8b, layers=32, kv_heads=8, head_dim=128, dtype=bf16, rope_base=500000,"
      "rope_pairing=neox, tp_rank=0, tp_world=1, block_tokens=256");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->CanonicalText(),
            "kvhub.spec.v1|model=llama3-8b|layers=32|kv_heads=8|head_dim=128|dtype=bf16|"
            "rope_base=411e848000000000|rope_pairing=neox|tp_rank=0|tp_world=1|block_tokens=256");
  EXPECT_EQ(spec->RawBlockBytes(), 32ull * 2 * 256 * 8 * 128 * 2);
}

TEST(ModelSpecTest, CompactTextParsesBackToTheSameSpec) {
  for (const char* text : {"model=llama3-8b,layers=32,kv_heads=8,head_dim=128,rope_base=500000",
                           "model=m,layers=3,kv_heads=1,head_dim=8,dtype=fp16,rope_base=500000.123456789,"
                           "rope_pairing=interleaved,tp_rank=1,tp_world=4,block_tokens=512",
                           "model=tiny,layers=1,kv_heads=1,head_dim=2,rope_base=1e-300"}) {
    auto spec = ModelSpec::Parse(text);
    ASSERT_TRUE(spec.ok()) << spec.status();
    auto again = ModelSpec::Parse(spec->CompactText());
    ASSERT_TRUE(again.ok()) << again.status() << " " << spec->CompactText();
    EXPECT_EQ(again->CanonicalText(), spec->CanonicalText()) << spec->CompactText();
  }
}

TEST(ModelSpecTest, RejectsBadFields) {
  for (const char* bad : {"layers=32,kv_heads=8,head_dim=128",  // no model
                          "model=a|b,layers=1,kv_heads=1,head_dim=1",
                          "model=a b,layers=1,kv_heads=1,head_dim=1",
                          "model=m,layers=0,kv_heads=1,head_dim=1",
                          "model=m,layers=1,kv_heads=1,head_dim=1,tp_rank=2,tp_world=2",
                          "model=m,layers=1,kv_heads=1,head_dim=1,dtype=int4",
                          "model=m,layers=1,kv_heads=1,head_dim=1,rope_base=-1",
                          "model=m,layers=1,kv_heads=1,head_dim=1,rope_base=nan",
                          "model=m,layers=x,kv_heads=1,head_dim=1",
                          "model=m,layers=1,kv_heads=1,head_dim=1,colour=red",
                          "model=m,layers=1,kv_heads=1,head_dim=1,block_tokens=0",
                          "model=m,layers=2,kv_heads=1,head_dim=1,layers=3",  // a field twice
                          "model=m,layers=1,kv_heads=1,head_dim=1,model=m",
                          // Not UTF-8 (DESIGN §2 hashes the UTF-8 name): Latin-1, a stray
                          // continuation byte, an overlong '/', a surrogate.
                          "model=caf\xe9,layers=1,kv_heads=1,head_dim=1",
                          "model=m\x80,layers=1,kv_heads=1,head_dim=1",
                          "model=\xc0\xaf,layers=1,kv_heads=1,head_dim=1",
                          "model=\xed\xa0\x80,layers=1,kv_heads=1,head_dim=1"}) {
    auto spec = ModelSpec::Parse(bad);
    EXPECT_FALSE(spec.ok()) << bad;
    if (!spec.ok()) {
      EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(ModelSpecTest, AcceptsUtf8ModelNames) {
  auto spec = ModelSpec::Parse("model=caf\xc3\xa9-\xe6\xa8\xa1\xe5\x9e\x8b,layers=1,kv_heads=1,head_dim=1");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model, "caf\xc3\xa9-\xe6\xa8\xa1\xe5\x9e\x8b");
}

}  // namespace
}  // namespace kvhub
