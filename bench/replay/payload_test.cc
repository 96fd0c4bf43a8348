// Replay payloads: per-key bytes that are valid encoded blocks, and the store model.
#include "bench/replay/payload.h"

#include <vector>

#include "bench/replay/byte_budget.h"
#include "bench/replay/store_model.h"
#include "codec/codec.h"
#include "gtest/gtest.h"
#include "storage/size_classes.h"

namespace kvhub::replay {
namespace {

TEST(ReplayPayload, SpecFromBytesPerToken) {
  PayloadConfig c;
  c.bytes_per_token = 131072;
  auto spec = ReplayModelSpec(c);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->layers, 32u);
  EXPECT_EQ(spec->kv_heads, 8u);
  EXPECT_EQ(spec->head_dim, 128u);
  EXPECT_EQ(spec->RawBlockBytes(), 131072u * 512);
  c.bytes_per_token = 1000;
  EXPECT_FALSE(ReplayModelSpec(c).ok());
  c.bytes_per_token = 4096;
  c.codec = "zip";
  EXPECT_FALSE(ReplayModelSpec(c).ok());
}

TEST(ReplayPayload, PerKeyBytesDecodeAndVerify) {
  for (const char* name : {"raw", "fp8", "int8", "kivi4", "kivi2"}) {
    PayloadConfig c;
    c.codec = name;
    c.bytes_per_token = 2048;
    auto f = PayloadFactory::Create(c);
    ASSERT_TRUE(f.ok()) << name << ": " << f.status();
    const ModelSpec& spec = (*f)->spec();
    BlockKey a{1, 2}, b{3, 4};
    std::vector<uint8_t> pa, pb, pa0, scratch;
    (*f)->Make(a, 3, &pa);
    (*f)->Make(b, 3, &pb);
    (*f)->Make(a, 0, &pa0);
    EXPECT_EQ(pa.size(), (*f)->block_bytes()) << name;
    EXPECT_EQ(pa0.size(), (*f)->first_block_bytes()) << name;
    EXPECT_NE(pa, pb) << name;
    EXPECT_TRUE((*f)->Verify(a, 3, pa, &scratch)) << name;
    EXPECT_FALSE((*f)->Verify(b, 3, pa, &scratch)) << name;
    std::vector<uint8_t> flipped = pa;
    flipped[flipped.size() / 2] ^= 1;
    EXPECT_FALSE((*f)->Verify(a, 3, flipped, &scratch)) << name;
    for (const std::vector<uint8_t>* p : {&pa, &pb, &pa0}) {
      auto h = codec::InspectBlock(*p);
      ASSERT_TRUE(h.ok()) << name << ": " << h.status();
      std::vector<uint8_t> out(h->shape.RawBytes());
      codec::KvMutableView view{h->shape, out.data(), out.size()};
      codec::BlockHeader got;
      absl::Status s = codec::Decode(*p, view, {}, &got);
      EXPECT_TRUE(s.ok()) << name << ": " << s;
      EXPECT_EQ(got.fingerprint, spec.Fingerprint());
      EXPECT_EQ(got.shape.tokens, 512u);
    }
    EXPECT_LT(pa.size(), spec.RawBlockBytes() + 4096) << name;
  }
}

TEST(ReplayByteBudget, RealEncodedSizes) {
  PayloadConfig c;
  c.bytes_per_token = 131072;
  auto spec = ReplayModelSpec(c);
  ASSERT_TRUE(spec.ok());
  const uint64_t budget = 3000000ull * 131072;  // 3M bf16 tokens: 393 GB
  auto raw = BlockSizeFor(*spec, "raw", budget);
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->raw_bytes, 64ull << 20);
  EXPECT_EQ(raw->encoded_bytes, (64ull << 20) + 128 + 64 * 16);  // header + segment table
  auto k4 = BlockSizeFor(*spec, "kivi4", budget);
  ASSERT_TRUE(k4.ok());
  EXPECT_GT(k4->ratio(), 3.5);
  EXPECT_LT(k4->ratio(), 3.6);
  EXPECT_GT(k4->first_bytes, k4->encoded_bytes);  // the sink token of a chain's first block
  EXPECT_GE(k4->store_chunk_bytes, k4->encoded_bytes);
  // A store this large gets 1 GiB slabs: the chunk wastes < 3% (a 64 MiB slab: +18.5%).
  EXPECT_LT(static_cast<double>(k4->store_chunk_bytes), 1.03 * static_cast<double>(k4->encoded_bytes));
  auto k4_small = BlockSizeFor(*spec, "kivi4", 4ull << 30);  // 4 GiB: 64 MiB slabs
  ASSERT_TRUE(k4_small.ok());
  EXPECT_EQ(k4_small->store_chunk_bytes, storage::SizeClasses::kAlign * ((64ull << 20) / 3 / 64));
  EXPECT_EQ(TokensInBudget(3000000ull * 131072, *k4, 512),
            3000000ull * 131072 / k4->encoded_bytes * 512);
  EXPECT_FALSE(BlockSizeFor(*spec, "gzip", budget).ok());
}

TEST(ReplayStoreModel, WatermarksInBlocks) {
  StoreModelInput in;
  in.capacity_bytes = 8ull << 20;
  in.region_bytes = 8ull << 20;
  in.max_block_bytes = 1ull << 20;
  in.block_bytes = 65536 + 128 + 64;  // a class of its own above 64 KiB
  auto m = ModelStore(in);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_GE(m->chunk_bytes, in.block_bytes);
  in.high_watermark = 0.95;
  in.low_watermark = 0.90;
  m = ModelStore(in);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->capacity_blocks, static_cast<uint64_t>(0.95 * (8 << 20)) / m->chunk_bytes);
  EXPECT_EQ(m->evict_to_blocks, static_cast<uint64_t>(0.90 * (8 << 20)) / m->chunk_bytes - 1);
  EXPECT_TRUE(m->exact);
  in.capacity_bytes = 100000;
  EXPECT_FALSE(ModelStore(in).ok());
}

}  // namespace
}  // namespace kvhub::replay
