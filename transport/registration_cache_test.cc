#include "transport/registration_cache.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvhub::transport {
namespace {

std::unique_ptr<UcxContext> TcpContext() {
  UcxConfig c;
  c.tls = "tcp";
  auto ctx = UcxContext::Create(c);
  EXPECT_TRUE(ctx.ok()) << ctx.status();
  return ctx.ok() ? std::move(*ctx) : nullptr;
}

TEST(RegistrationCacheTest, FindsCoveringRangeOnly) {
  auto ctx = TcpContext();
  ASSERT_NE(ctx, nullptr);
  RegistrationCache cache(ctx.get(), 4);
  std::vector<uint8_t> a(1 << 16), b(1 << 16);
  ASSERT_TRUE(cache.Register(a.data(), a.size()).ok());
  EXPECT_NE(cache.Find(a.data(), a.size()), nullptr);
  EXPECT_NE(cache.Find(a.data() + 100, 1000), nullptr);
  EXPECT_EQ(cache.Find(a.data() + 100, a.size()), nullptr);  // runs past the end
  EXPECT_EQ(cache.Find(b.data(), 10), nullptr);
  EXPECT_EQ(cache.hits(), 2u);
  EXPECT_EQ(cache.misses(), 2u);
  // Registering a covered sub-range adds nothing.
  ASSERT_TRUE(cache.Register(a.data() + 8, 64).ok());
  EXPECT_EQ(cache.size(), 1u);
  // A small range registered first, then a larger one around it: a range only the
  // larger covers is found (it looked at the nearest start only, the small one).
  std::vector<uint8_t> c(1 << 16);
  ASSERT_TRUE(cache.Register(c.data() + 4096, 4096).ok());
  ASSERT_TRUE(cache.Register(c.data(), c.size()).ok());
  EXPECT_EQ(cache.size(), 3u);
  std::shared_ptr<UcxMemory> large = cache.Find(c.data() + 32768, 4096);
  ASSERT_NE(large, nullptr);
  EXPECT_EQ(large->base(), c.data());
  ASSERT_TRUE(cache.Register(c.data() + 40000, 100).ok());  // covered: nothing added
  EXPECT_EQ(cache.size(), 3u);
}

TEST(RegistrationCacheTest, EvictsLeastRecentlyUsedAndKeepsHeldEntriesAlive) {
  auto ctx = TcpContext();
  ASSERT_NE(ctx, nullptr);
  RegistrationCache cache(ctx.get(), 2);
  std::vector<std::vector<uint8_t>> bufs(3, std::vector<uint8_t>(4096));
  ASSERT_TRUE(cache.Register(bufs[0].data(), 4096).ok());
  ASSERT_TRUE(cache.Register(bufs[1].data(), 4096).ok());
  std::shared_ptr<UcxMemory> held = cache.Find(bufs[0].data(), 4096);  // 0 becomes most recent
  ASSERT_NE(held, nullptr);
  ASSERT_TRUE(cache.Register(bufs[2].data(), 4096).ok());  // evicts 1
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.Find(bufs[1].data(), 4096), nullptr);
  EXPECT_NE(cache.Find(bufs[0].data(), 4096), nullptr);
  ASSERT_TRUE(cache.Unregister(bufs[0].data()).ok());
  EXPECT_EQ(cache.Find(bufs[0].data(), 4096), nullptr);
  EXPECT_EQ(held->base(), bufs[0].data());  // still valid while held
  EXPECT_EQ(cache.Unregister(bufs[0].data()).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache.Register(nullptr, 1).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RegistrationCacheTest, ZeroEntriesDisables) {
  auto ctx = TcpContext();
  ASSERT_NE(ctx, nullptr);
  RegistrationCache cache(ctx.get(), 0);
  std::vector<uint8_t> a(4096);
  ASSERT_TRUE(cache.Register(a.data(), a.size()).ok());
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.Find(a.data(), 1), nullptr);
}

}  // namespace
}  // namespace kvhub::transport
