#include "tests/stress/stress_workload.h"

#include "gtest/gtest.h"

namespace kvhub::stress {
namespace {

Workload Make(WorkloadOptions o = {}) {
  auto wl = Workload::Create(o);
  EXPECT_TRUE(wl.ok()) << wl.status();
  return *std::move(wl);
}

TEST(StressWorkloadTest, RefusesBadOptions) {
  for (auto bad : {WorkloadOptions{.prompts = 0}, WorkloadOptions{.groups = 0},
                   WorkloadOptions{.prompts = 4, .groups = 5}, WorkloadOptions{.max_blocks = 0},
                   WorkloadOptions{.block_tokens = 0}, WorkloadOptions{.min_block_bytes = 0},
                   WorkloadOptions{.min_block_bytes = 4096, .max_block_bytes = 1024},
                   WorkloadOptions{.max_block_bytes = (64ull << 20) + 1}}) {
    EXPECT_EQ(Workload::Create(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(StressWorkloadTest, PromptsOfAGroupShareTheirLeadAndNothingElse) {
  const Workload wl = Make({.prompts = 64, .groups = 4, .max_blocks = 8});
  for (uint32_t p = 0; p < 64; ++p) {
    ASSERT_GE(wl.Blocks(p), wl.SharedBlocks(p));
    ASSERT_LE(wl.Blocks(p), 8u);
    ASSERT_GE(wl.SharedBlocks(p), 1u);
    EXPECT_EQ(wl.Tokens(p), wl.Tokens(p)) << "deterministic";
    EXPECT_EQ(wl.Tokens(p).size(), wl.Blocks(p) * wl.spec().block_tokens);
  }
  // Prompts 0 and 4 are in group 0 with 1 shared block; 0 and 1 are in different groups.
  const auto k0 = BlockKeys("ns", wl.spec(), wl.Tokens(0));
  const auto k4 = BlockKeys("ns", wl.spec(), wl.Tokens(4));
  const auto k1 = BlockKeys("ns", wl.spec(), wl.Tokens(1));
  EXPECT_EQ(k0[0], k4[0]);
  EXPECT_NE(k0[0], k1[0]);
  if (k0.size() > 1 && k4.size() > 1) {
    EXPECT_NE(k0[1], k4[1]);
  }
  // Prompt 16 (group 0, (16/4)%3 = 1 -> 2 shared blocks) shares 2 blocks' tokens with prompt 20.
  const auto t16 = wl.Tokens(16), t20 = wl.Tokens(20);
  const size_t lead = 2 * wl.spec().block_tokens;
  EXPECT_EQ(wl.SharedBlocks(16), 2u);
  EXPECT_TRUE(std::equal(t16.begin(), t16.begin() + lead, t20.begin()));
}

TEST(StressWorkloadTest, PayloadIsAFunctionOfTheKeyAndAnyChangeIsCaught) {
  const Workload wl = Make({.min_block_bytes = 100, .max_block_bytes = 5000});
  for (uint64_t i = 1; i < 200; ++i) {
    const BlockKey key{i * 0x9e3779b97f4a7c15ull, i};
    const uint64_t size = wl.PayloadSize(key);
    ASSERT_GE(size, 100u);
    ASSERT_LE(size, 5000u);
    std::vector<uint8_t> p = wl.ExpectedPayload(key);
    ASSERT_EQ(p.size(), size);
    EXPECT_EQ(p, wl.ExpectedPayload(key));
    EXPECT_TRUE(wl.Matches(key, p));
    EXPECT_FALSE(wl.Matches(key, std::span<const uint8_t>(p).first(p.size() - 1))) << "truncated";
    std::vector<uint8_t> longer = p;
    longer.push_back(0);
    EXPECT_FALSE(wl.Matches(key, longer)) << "extended";
    std::vector<uint8_t> flipped = p;
    flipped[i % flipped.size()] ^= 0x10;
    EXPECT_FALSE(wl.Matches(key, flipped)) << "bit flip at " << i % flipped.size();
    flipped = p;
    flipped.back() ^= 1;
    EXPECT_FALSE(wl.Matches(key, flipped)) << "bit flip in the tail";
    const BlockKey other{key.lo + 1, key.hi};
    EXPECT_FALSE(wl.Matches(other, p)) << "another key's bytes";
  }
}

}  // namespace
}  // namespace kvhub::stress
